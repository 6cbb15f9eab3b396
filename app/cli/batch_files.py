"""A batch's files on their way in and out: the input built from records and uploaded (the
batch is created only once the upload succeeded), the output and error files downloaded.

Files are streamed, never held whole in memory; a failed step leaves nothing behind that looks
complete (an upload no batch will read is deleted, a cut download never takes its final name)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx

from app.cli.common import STREAM_TIMEOUT, ApiError, check, err_console, fail, path_of
from app.cli.records import RecordError, RecordSpec, write_requests

UPLOAD_TIMEOUT = httpx.Timeout(600.0, connect=5.0)


def upload_name(file: Path) -> str:
    """The name a ready batch input is uploaded under (the server wants `.jsonl`)."""
    return file.name if file.name.lower().endswith(".jsonl") else f"{file.stem}.jsonl"


def sample_note(sample: int | None, count: int | None = None) -> str:
    """What `--sample N` means for this file, said before anything runs ("" without it)."""
    if sample is None or (count is not None and sample >= count):
        return ""
    return f"--sample {sample}: only the first {sample} requests run (a dry run)"


def prepare(file: Path, spec: RecordSpec | None, tmp: Path,
            sample: int | None = None) -> tuple[Path, str]:
    """The file to upload and the name to give it (the server wants `.jsonl`)."""
    if spec is None:
        if file.suffix.lower() == ".json":
            fail(f"{file.name} is a .json file: read it as records with --prompt-field and "
                 "--model (a ready batch input is .jsonl)")
        if note := sample_note(sample):
            err_console().print(note, style="dim", markup=False)
        return file, upload_name(file)
    built = tmp / f"{file.stem}.jsonl"
    try:
        with built.open("wb") as out:
            count, bare = write_requests(file, spec, out)
    except RecordError as exc:
        fail(f"{file.name}: {exc}; nothing was uploaded")
    except UnicodeDecodeError as exc:
        fail(f"{file.name} is not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    note = f"{count} requests from {file.name}"
    if spec.system_field and bare:
        note += f" ({bare} without '{spec.system_field}': no system prompt)"
    if sampled := sample_note(sample, count):
        note += f"; {sampled}"
    err_console().print(note, style="dim", markup=False)
    return built, built.name


def start_batch(client: httpx.Client, path: Path, name: str, endpoint: str, window: str,
                metadata: dict[str, str]) -> dict[str, Any]:
    """Upload the input (streamed from disk) and create the batch."""
    with path.open("rb") as f:
        r = client.post("/v1/files", data={"purpose": "batch"},
                        files={"file": (name, f, "application/jsonl")}, timeout=UPLOAD_TIMEOUT)
    check(r)
    file_id = str(r.json()["id"])
    body: dict[str, Any] = {"input_file_id": file_id, "endpoint": endpoint,
                            "completion_window": window}
    if metadata:
        body["metadata"] = metadata
    try:
        r = client.post("/v1/batches", json=body)
        check(r)
    except ApiError:
        with contextlib.suppress(httpx.HTTPError):  # no batch will ever read it
            client.delete(path_of("files", file_id))
        raise
    batch: dict[str, Any] = r.json()
    return batch


def download(client: httpx.Client, file_id: str, dest: Path) -> int:
    """Stream a file's content to `dest`; returns its lines. Written beside `dest` first, so a
    cut download never looks complete."""
    part = dest.with_name(dest.name + ".part")
    lines, last = 0, b"\n"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with part.open("wb") as f, client.stream("GET", path_of("files", file_id, "content"),
                                                 timeout=STREAM_TIMEOUT) as r:
            check(r, 200)
            for chunk in r.iter_bytes():
                if chunk:
                    f.write(chunk)
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
        part.replace(dest)
    except OSError as exc:
        fail(f"cannot write {dest}: {exc.strerror or exc}")
    finally:
        part.unlink(missing_ok=True)
    return lines + (last != b"\n")
