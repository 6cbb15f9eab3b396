"""Records (a .jsonl or .json file of objects) → OpenAI batch lines, one chat request each.

Pure logic over local files: no HTTP, no terminal. Every problem is a RecordError whose message
names the record and the field, so `rafale batch submit` can refuse the whole file before any
upload."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHAT = "/v1/chat/completions"


class RecordError(Exception):
    """A record cannot become a request; the message names the record and the field."""


_MISSING = object()


def dig(record: Any, path: str) -> Any:
    """`a.b.c` inside nested objects (a number step indexes a list); _MISSING when absent.
    A key that itself contains dots is found as is."""
    if isinstance(record, dict) and path in record:
        return record[path]
    value = record
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return _MISSING
    return value


def _text(value: Any, where: str, name: str) -> str | None:
    """A field's value as text; None when absent or null."""
    if value is _MISSING or value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RecordError(f"{where}: '{name}' is {type(value).__name__}, not text")
    return str(value)


@dataclass(frozen=True)
class RecordSpec:
    """How a record becomes a batch line."""

    prompt_field: str
    model: str
    endpoint: str = CHAT
    system_field: str | None = None
    id_field: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None

    def line(self, index: int, record: Any, where: str) -> dict[str, Any]:
        if not isinstance(record, dict):
            raise RecordError(f"{where} is {type(record).__name__}, not a JSON object")
        body = self.body(record, where)  # first: a missing prompt is the error to report
        return {"custom_id": self.custom_id(index, record, where), "method": "POST",
                "url": self.endpoint, "body": body}

    def body(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        prompt = _text(dig(record, self.prompt_field), where, self.prompt_field)
        if prompt is None:
            raise RecordError(f"{where} has no '{self.prompt_field}' (--prompt-field)")
        messages = [{"role": "user", "content": prompt}]
        if self.system_field:
            system = _text(dig(record, self.system_field), where, self.system_field)
            if system:
                messages.insert(0, {"role": "system", "content": system})
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def custom_id(self, index: int, record: dict[str, Any], where: str) -> str:
        if self.id_field is None:
            return str(index)
        value = dig(record, self.id_field)
        if isinstance(value, bool) or not isinstance(value, str | int):
            what = "no" if value is _MISSING or value is None else f"a {type(value).__name__} as"
            raise RecordError(f"{where} has {what} '{self.id_field}' (--custom-id-field needs "
                              "a string or an integer)")
        if value == "":
            raise RecordError(f"{where} has an empty '{self.id_field}' (--custom-id-field)")
        return str(value)


def record_list(data: Any, name: str) -> list[Any]:
    """A .json file's records: the array itself, or the one array inside an object."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        arrays = [k for k, v in data.items() if isinstance(v, list)]
        if len(arrays) == 1:
            return list(data[arrays[0]])
        if arrays:
            raise RecordError(f"{name} holds several arrays ({', '.join(arrays)}): expected one "
                              "array of records")
    raise RecordError(f"{name} must hold an array of records, or an object with one array")


def _jsonl_records(path: Path) -> Iterator[tuple[int, str, Any]]:
    with path.open(encoding="utf-8-sig") as f:
        index = 0
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"record {index} (line {number})"
            try:
                record = json.loads(raw)
            except ValueError as exc:
                raise RecordError(f"{where} is not valid JSON: {exc}") from None
            yield index, where, record
            index += 1


def _json_records(path: Path) -> Iterator[tuple[int, str, Any]]:
    with path.open(encoding="utf-8-sig") as f:
        try:
            data = json.load(f)
        except ValueError as exc:
            raise RecordError(f"{path.name} is not valid JSON: {exc}") from None
    records = record_list(data, path.name)
    del data
    for index, record in enumerate(records):
        yield index, f"record {index}", record


def iter_records(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(0-based index, how to name it in an error, record). A .jsonl file is read line by line;
    a .json file is parsed whole (once)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_records(path)
    if suffix == ".json":
        return _json_records(path)
    raise RecordError(f"records are read from a .jsonl file (an object a line) or a .json "
                      f"file (an array of objects), not {path.name}")


def write_requests(path: Path, spec: RecordSpec, out: IO[bytes]) -> tuple[int, int]:
    """Write one batch line per record; returns (lines, lines sent without a system prompt)."""
    seen: dict[str, int] = {}
    count = bare = 0
    for index, where, record in iter_records(path):
        line = spec.line(index, record, where)
        cid = line["custom_id"]
        if cid in seen:
            raise RecordError(f"{where} repeats custom_id '{cid}' of record {seen[cid]}")
        seen[cid] = index
        bare += len(line["body"]["messages"]) == 1
        out.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        count += 1
    if count == 0:
        raise RecordError(f"{path.name} holds no records")
    return count, bare

