"""Planning a batch: validate every input line, then fan the requests out as groups on
`llm_batch`. Streams the input twice (check, then plan): memory holds the custom ids and at
most a few MB of pending messages, whatever the file's size.

Validation follows OpenAI's Batch API: a line that is not a request this batch can run (not
JSON, no custom_id, another URL, streaming, another model) fails the whole batch, with one
entry per problem (1-based `line`) in `errors.data`. The rest of a line's body is checked when
it runs, by the live route's own model (calls.py): a body the route would refuse ends in the
error file with the route's 400, and the other lines run."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from app import batch_states
from app.bounds import model_problem
from app.broker import Broker
from app.errors import RafaleError
from app.providers.deepl import check_language
from app.providers.registry import Registry
from app.schemas import BatchLine, BatchTask
from app.settings import Settings
from app.store import Store, batches
from app.store.files import get_file, read_file
from app.store.models import BatchRow

log = logging.getLogger(__name__)

MAX_ERRORS = 1000  # entries kept in errors.data; the rest are counted in a last entry
INSERT_CHUNK = 1000  # rows a transaction, messages a confirmed publish
GROUP_BYTES = 1 << 20  # a group message stays well under RabbitMQ's message size limit
FLUSH_BYTES = 8 << 20  # pending messages held before publishing


def lines_of(store: Store, file_id: str) -> AsyncIterator[tuple[int, bytes]]:
    """The lines of a stored file (see `split_lines`)."""
    return split_lines(read_file(store, file_id))


async def split_lines(parts: AsyncIterable[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    """(1-based line number, content) of a file read in parts, without a BOM, `\\r` or the
    newline; blank lines are skipped but still counted."""
    rest = b""
    number = 0
    first = True
    async for part in parts:
        if first:
            part = part.removeprefix(b"\xef\xbb\xbf")
            first = False
        chunk = rest + part
        *complete, rest = chunk.split(b"\n")
        for raw in complete:
            number += 1
            raw = raw.rstrip(b"\r")
            if raw.strip():
                yield number, raw
    if rest.strip():
        yield number + 1, rest.rstrip(b"\r")


def _err(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


@dataclass
class Check:
    """What the first pass learns: problems, the one model, how many requests."""

    endpoint: str
    registry: Registry
    errors: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    seen: set[str] = field(default_factory=set)
    model: str | None = None
    count: int = 0

    def problem(self, code: str, message: str, line: int | None,
                param: str | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(_err(code, message, line, param))
        else:
            self.dropped += 1

    def line(self, number: int, raw: bytes) -> None:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.problem("invalid_json_line", "This line is not parseable as valid JSON.", number)
            return
        if not isinstance(obj, dict):
            self.problem("invalid_json_line", "This line is not a JSON object.", number)
            return
        self.count += 1
        missing = [k for k in ("custom_id", "method", "url", "body") if obj.get(k) in (None, "")]
        if missing:
            for key in missing:
                self.problem("missing_required_parameter",
                             f"Missing required parameter: '{key}'.", number, key)
            return
        custom_id, body = obj["custom_id"], obj["body"]
        if not isinstance(custom_id, str):
            self.problem("invalid_type", "'custom_id' must be a string.", number, "custom_id")
        elif len(custom_id) > 512:
            self.problem("invalid_value", "'custom_id' is longer than 512 characters.", number,
                         "custom_id")
        elif custom_id in self.seen:
            self.problem("duplicate_custom_id",
                         f"The custom_id '{custom_id[:100]}' is used by an earlier line.",
                         number, "custom_id")
        else:
            self.seen.add(custom_id)
        if str(obj["method"]).upper() != "POST":
            self.problem("invalid_value", "Only the POST method is supported.", number, "method")
        if obj["url"] != self.endpoint:
            self.problem("invalid_url", "The URL provided for this request does not match the "
                         "batch endpoint.", number, "url")
            return
        if not isinstance(body, dict):
            self.problem("invalid_type", "'body' must be a JSON object.", number, "body")
            return
        if self.endpoint == "/v1/chat/completions":
            self._chat(number, body)
        elif self.endpoint in ("/v1/embeddings", "/v1/responses"):
            self._model_and_input(number, body)
        else:
            self._translate(number, body)

    def _chat(self, number: int, body: dict[str, Any]) -> None:
        if body.get("stream"):
            self.problem("streaming_unsupported", "Chat Completions: Streaming is not supported "
                         "in the Batch API.", number, "body.stream")
        model = body.get("model")
        if not model or not isinstance(model, str):
            self.problem("invalid_request", "Model parameter is required.", number, "body.model")
            return
        if message := model_problem(model):  # the batch's one model, as at the live route
            self.problem("invalid_value", message, number, "body.model")
            return
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            self.problem("invalid_request", "Messages parameter is required.", number,
                         "body.messages")
        self._model(number, model)

    def _model_and_input(self, number: int, body: dict[str, Any]) -> None:
        """The batch's one model, and an input (embeddings, responses): the rest of the body
        (stream and background too) is the live route's and the batch line's to refuse when
        the line runs (calls.py), its 400 then in the error file."""
        model = body.get("model")
        if not model or not isinstance(model, str):
            self.problem("invalid_request", "Model parameter is required.", number, "body.model")
            return
        if message := model_problem(model):
            self.problem("invalid_value", message, number, "body.model")
            return
        if body.get("input") is None:
            self.problem("invalid_request", "Input parameter is required.", number,
                         "body.input")
        self._model(number, model)

    def _translate(self, number: int, body: dict[str, Any]) -> None:
        text = body.get("text")
        if not isinstance(text, list) or not text or not all(isinstance(t, str) for t in text):
            self.problem("invalid_request", "'text' must be a non-empty list of strings.",
                         number, "body.text")
        target = body.get("target_lang")
        if not isinstance(target, str):
            self.problem("invalid_request", "'target_lang' is required.", number,
                         "body.target_lang")
            return
        try:
            check_language(target, "target_lang")
        except RafaleError as exc:
            self.problem("invalid_request", exc.message, number, "body.target_lang")
            return
        self._model(number, f"deepl/{target.upper()}")

    def _model(self, number: int, model: str) -> None:
        try:
            if self.endpoint == "/v1/embeddings":
                self.registry.embedding_model(model)  # DeepSeek, DeepL: refused here
            else:
                self.registry.split(model)
        except RafaleError as exc:
            self.problem("model_not_found", f"The provided model '{model}' is not supported "
                         f"by the Batch API: {exc.message}", number, "body.model")
            return
        if self.endpoint == "/v1/translate":
            return  # one target language per line is fine: one provider
        if self.model is None:
            self.model = model
        elif model != self.model:
            self.problem("model_mismatch", f"Every request of a batch must use one model; this "
                         f"line asks for '{model}', earlier lines for '{self.model}'.",
                         number, "body.model")


def sample_size(metadata_json: str | None) -> int | None:
    """`metadata.sample_size`: run only the first N requests (a dry run)."""
    if not metadata_json:
        return None
    raw = orjson.loads(metadata_json).get("sample_size")
    try:
        n = int(raw) if raw is not None else None
    except ValueError:
        return None
    return n if n and n > 0 else None


async def plan(task: BatchTask, *, store: Store, broker: Broker, registry: Registry,
               settings: Settings) -> bool:
    """Validate, then fan out. Safe to run again at any point: rows are only ever added and
    a group sent twice runs its lines once. Returns True when the caller should look at
    finalizing (planning is over), False when there is nothing to end (failed validation,
    or done before)."""
    row = await batches.load(store, task.batch_id)
    if row.planned or row.status in batch_states.TERMINAL:
        return False
    if row.status == "validating" and row.ending is None:
        total = await _validate(row, store, registry, settings)
        if total is None:
            return False
        model = None
        if row.endpoint in ("/v1/chat/completions", "/v1/embeddings", "/v1/responses"):
            model = total[1]
        if not await batches.start(store, row.id, total[0], model):
            row = await batches.load(store, row.id)  # a cancel or the expiry came first
        else:
            row = await batches.load(store, row.id)
            log.info("batch %s validated: %d request(s)", row.id, row.total)
    if row.ending is None:
        await _fan_out(row, task, store, broker, settings)
        row = await batches.load(store, row.id)
    if row.ending is not None:
        # Stopped before or while planning: what was not started never will be.
        await batches.settle_unstarted(store, row.id, batch_states.stopped_status(row.ending))
    await batches.mark_planned(store, row.id)
    return True


async def _validate(row: BatchRow, store: Store, registry: Registry,
                    settings: Settings) -> tuple[int, str | None] | None:
    """The first pass: (requests to run, the model), or None after failing the batch."""
    try:
        info = await get_file(store, row.owner, row.input_file_id)
    except RafaleError:
        info = None
    if info is None or info.purpose != "batch":
        await batches.fail_validation(store, row.id, [_err(
            "invalid_request", f"Cannot find file {row.input_file_id} with purpose 'batch', or "
            "it is not accessible to this API key.", None, "file_id")])
        return None
    check = Check(row.endpoint, registry)
    async for number, raw in lines_of(store, row.input_file_id):
        check.line(number, raw)
    if check.count == 0 and not check.errors:
        check.problem("empty_file", "The input file contains no requests.", None)
    if check.count > settings.batch_max_requests:
        check.problem("batch_size_exceeded", f"The batch has {check.count} requests; the limit "
                      f"is {settings.batch_max_requests}.", None)
    if check.errors:
        if check.dropped:
            check.errors.append(_err("too_many_errors", f"{check.dropped} more problems not "
                                     "listed.", None))
        log.info("batch %s failed validation: %d problem(s)", row.id, len(check.errors))
        await batches.fail_validation(store, row.id, check.errors)
        return None
    return min(check.count, sample_size(row.metadata_json) or check.count), check.model


async def _fan_out(row: BatchRow, task: BatchTask, store: Store, broker: Broker,
                   settings: Settings) -> None:
    """The second pass: a row per line, then its group on `llm_batch`, in chunks; stops early
    if the batch is cancelled or expires meanwhile."""
    out = Fanout(row.id, row.endpoint, task.request_id, settings.batch_group_size)
    planned = 0
    async for number, raw in lines_of(store, row.input_file_id):
        if planned >= row.total:
            break
        obj = orjson.loads(raw)
        out.add(BatchLine(line=number, custom_id=obj["custom_id"], body=obj["body"]), len(raw))
        planned += 1
        if out.due() and not await _flush(out, row.id, store, broker):
            return
    await _flush(out, row.id, store, broker)
    log.info("batch %s planned: %d request(s) in groups of up to %d", row.id, planned,
             settings.batch_group_size)


async def _flush(out: Fanout, batch_id: str, store: Store, broker: Broker) -> bool:
    """Rows first (a group must find its lines), then their groups; False once the batch was
    stopped."""
    rows, messages = out.take()
    await batches.add_items(store, batch_id, rows)
    await broker.publish(messages, routing_key=broker.topology.batch)
    return (await batches.load(store, batch_id)).ending is None


class Fanout:
    """The second pass's pending work: the group being filled, and the rows and group
    messages not yet written and published."""

    def __init__(self, batch_id: str, endpoint: str, request_id: str, group_size: int) -> None:
        self.batch_id = batch_id
        self.endpoint = endpoint
        self.request_id = request_id
        self.group_size = group_size
        self.group: list[BatchLine] = []
        self.group_bytes = 0
        self.rows: list[tuple[int, str]] = []
        self.messages: list[tuple[str, bytes]] = []
        self.pending_bytes = 0

    def add(self, line: BatchLine, size: int) -> None:
        """One more line (`size`: its bytes in the input); a full group is closed."""
        self.group.append(line)
        self.group_bytes += size
        self.rows.append((line.line, line.custom_id))
        if len(self.group) >= self.group_size or self.group_bytes >= GROUP_BYTES:
            self.close_group()

    def due(self) -> bool:
        """Enough is pending to write and publish it now."""
        return len(self.rows) >= INSERT_CHUNK or self.pending_bytes >= FLUSH_BYTES

    def close_group(self) -> None:
        if self.group:
            body = BatchTask(kind="batch_items", batch_id=self.batch_id, endpoint=self.endpoint,
                             lines=list(self.group), created=time.time(),
                             request_id=self.request_id).model_dump_json().encode()
            self.messages.append((f"{self.batch_id}.{self.group[0].line}", body))
            self.pending_bytes += len(body)
            self.group.clear()
            self.group_bytes = 0

    def take(self) -> tuple[list[tuple[int, str]], list[tuple[str, bytes]]]:
        """Close the open group and hand over (rows, messages); nothing is pending after."""
        self.close_group()
        rows, messages = self.rows, self.messages
        self.rows, self.messages, self.pending_bytes = [], [], 0
        return rows, messages
