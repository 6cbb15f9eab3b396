"""Helpers for batch tests: build JSONL inputs, wait for a batch, read its result files."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import openai


def chat_line(custom_id: str, prompt: str, model: str = "mock/echo",
              url: str = "/v1/chat/completions", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": prompt}], **body}}


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((json.dumps(x) if not isinstance(x, str) else x).encode() + b"\n"
                    for x in lines)


async def wait_batch(client: openai.AsyncOpenAI, batch_id: str, statuses: tuple[str, ...] = (
        "completed", "failed", "expired", "cancelled"), within: float = 60) -> Any:
    """Poll until the batch reaches one of `statuses`; fail with its last state otherwise."""
    deadline = time.monotonic() + within
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {batch.status} after {within}s: "
                                 f"{batch.request_counts}")
        await asyncio.sleep(0.1)


async def result_lines(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await client.files.content(file_id)
    return [json.loads(x) for x in content.text.splitlines()]


async def submit(client: openai.AsyncOpenAI, lines: list[Any], *, name: str = "in.jsonl",
                 endpoint: str = "/v1/chat/completions", window: str = "24h",
                 metadata: dict[str, str] | None = None) -> Any:
    f = await client.files.create(file=(name, jsonl(lines)), purpose="batch")
    kwargs: dict[str, Any] = {"input_file_id": f.id, "endpoint": endpoint,
                              "completion_window": window}
    if metadata:
        kwargs["metadata"] = metadata
    return await client.batches.create(**kwargs)
