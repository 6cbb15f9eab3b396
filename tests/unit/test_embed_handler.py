"""The worker's embeddings handler (workers/embed.py) against an in-process channel and the
mock provider: vectors out in order as chunk events, `done` with the usage, `reset` first on a
redelivery, a provider's refusal as an `error` event, usage recorded however it ends."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app import vectors
from app.embeddings import Embeddings
from app.generation import CallPolicy
from app.providers.mock import mock_embedding
from app.providers.registry import Registry
from app.schemas import EmbedBody, EmbedTask
from tests.unit.conftest import SettingsFactory
from tests.unit.test_session_stream import Channel
from workers.embed import run_embed

POLICY = CallPolicy(first_byte=2, idle=2, total=5, max_attempts=2, backoff_base=0.01,
                    backoff_max=0.02)


class Usage:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, **fields: Any) -> None:
        self.records.append(fields)


def task(inputs: list[str], model: str = "mock/embed", deadline: float = 0.0) -> EmbedTask:
    return EmbedTask(task_id="t1", owner="alice", model=model, reply_to="session.q",
                     deadline=deadline or time.time() + 60, request_id="req_1",
                     reserved_tokens=9, body=EmbedBody(inputs=inputs, dimensions=4))


@pytest.fixture
def embeddings(make_settings: SettingsFactory) -> tuple[Embeddings, Usage]:
    usage = Usage()
    return Embeddings(Registry(make_settings(mock_delay=0)), POLICY,
                      usage=usage), usage  # type: ignore[arg-type]


async def test_vectors_go_out_in_order_then_done_and_usage_is_recorded(
        embeddings: tuple[Embeddings, Usage], monkeypatch: pytest.MonkeyPatch) -> None:
    made, usage = embeddings
    monkeypatch.setattr("workers.embed.groups", lambda v: vectors.groups(v, limit=30))
    ch = Channel()
    texts = ["one", "two", "three"]
    outcome = await run_embed(task(texts), 1, ch, made, POLICY)  # type: ignore[arg-type]
    assert outcome == "done"
    *chunks, done = ch.sent
    assert [e["type"] for e in chunks] == ["chunk"] * len(chunks) and len(chunks) > 1
    got = [v for e in chunks for v in e["embeddings"]]
    assert got == [vectors.pack(mock_embedding(t, 4)) for t in texts]
    assert done["type"] == "done" and done["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert [e["seq"] for e in ch.sent] == list(range(len(ch.sent)))
    (row,) = usage.records
    assert (row["key"], row["model"], row["kind"], row["outcome"], row["input_tokens"],
            row["reserved_tokens"]) == ("alice", "mock/embed", "embed", "done", 3, 9)


async def test_a_redelivery_resets_first_and_a_refusal_is_an_error_event(
        embeddings: tuple[Embeddings, Usage]) -> None:
    made, usage = embeddings
    ch = Channel()
    assert await run_embed(task(["x"]), 2, ch, made, POLICY) == "done"  # type: ignore[arg-type]
    assert [e["type"] for e in ch.sent] == ["reset", "chunk", "done"]
    assert all(e["attempt"] == 2 for e in ch.sent)
    ch = Channel()
    outcome = await run_embed(task(["x"], model="mock/echo"), 1, ch, made,  # type: ignore[arg-type]
                              POLICY)
    assert outcome == "error"
    (err,) = ch.sent
    assert (err["type"], err["status"], err["code"]) == ("error", 400, "model_not_supported")
    # Refused before any provider call: the redelivered answer's row is the only one.
    assert [r["outcome"] for r in usage.records] == ["done"]


async def test_a_task_past_its_deadline_never_reaches_the_provider(
        embeddings: tuple[Embeddings, Usage]) -> None:
    made, usage = embeddings
    ch = Channel()
    outcome = await run_embed(task(["x"], deadline=time.time() - 1), 1, ch,  # type: ignore[arg-type]
                              made, POLICY)
    assert outcome == "expired" and ch.sent[0]["code"] == "task_expired"
    assert usage.records == []
