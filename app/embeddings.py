"""Making embeddings: the one provider-side entry point, `Embeddings.create(owner, model,
input, ...)`, used by the worker's embed tasks (workers/embed.py), by batch lines
(workers/batch/calls.py), and by any other door that runs where providers are called.

The call goes through the same retry policy as every provider call (app/generation.py), and
what it spent is recorded as a usage row (priced by app/pricing.py) however it ends, which
also settles the tokens admission reserved for it (KEY_TPM)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticCustomError

from app.errors import InvalidRequest, ProviderTimeout, RafaleError
from app.generation import CallPolicy, call_with_retries
from app.metrics import Metrics
from app.providers.base import Embedded, Embedder, EmbedParams
from app.providers.registry import Registry
from app.schemas import EmbedInputs, embedding_inputs
from app.usage import Kind, Outcome
from app.usage_recorder import UsageRecorder
from app.vectors import estimate_tokens, usage_object

Slot = Callable[[str], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """Embeddings made: `model` as asked (`provider/model`), one packed vector per input
    (app/vectors.py), OpenAI's usage object, and whether its count is Rafale's estimate."""

    model: str
    vectors: list[str]
    usage: dict[str, int]
    estimated: bool


def inputs_of(value: Any) -> EmbedInputs:
    """OpenAI's `input` (a string, strings, token ids or arrays of them) as a list, or the
    route's own 400."""
    try:
        return embedding_inputs(value)
    except (ValueError, PydanticCustomError) as exc:
        raise InvalidRequest(f"Invalid 'input': {exc}", param="input",
                             code="invalid_value") from None


class Embeddings:
    def __init__(self, registry: Registry, policy: CallPolicy, *,
                 usage: UsageRecorder | None = None, metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.policy = policy
        self.usage = usage
        self.metrics = metrics

    async def create(self, owner: str, model: str, input: Any, *,
                     dimensions: int | None = None, user: str | None = None,
                     extra: dict[str, Any] | None = None, request_id: str = "",
                     kind: Kind = "embed", reserved_tokens: int = 0,
                     policy: CallPolicy | None = None, deadline: float | None = None,
                     slot: Slot | None = None,
                     before: Callable[[str], Awaitable[None]] | None = None,
                     ended: Callable[[RafaleError], bool] | None = None) -> EmbedResult:
        """Embed `input` with `model` for `owner` (a key's name). Raises a RafaleError when
        the model cannot embed or the provider fails after the policy's retries. `deadline`
        (loop time) defaults to the policy's total; `slot` and `before` wrap each attempt
        (a batch's per-provider cap and cooldown). A call that reached the provider is
        recorded however it ends, unless `ended` says a failure does not end the request (a
        batch line given back to run later)."""
        inputs = inputs_of(input)
        name, provider_model, provider = self.registry.embedder(model)
        policy = policy or self.policy
        loop = asyncio.get_running_loop()
        end = deadline if deadline is not None else loop.time() + policy.total
        params = EmbedParams(provider_model, inputs, dimensions, user, dict(extra or {}))
        outcome: Outcome = "cancelled"
        result: EmbedResult | None = None
        reached: list[bool] = []  # set once an attempt calls the provider

        async def once() -> Embedded:
            if before is not None:
                await before(name)
            async with slot(name) if slot is not None else nullcontext():
                reached.append(True)
                return await self._once(provider, params, end)

        try:
            embedded = await call_with_retries(
                once, name, policy, deadline=end, label=f"embeddings [{request_id}]",
                metrics=self.metrics)
            estimate = estimate_tokens(inputs)
            usage = usage_object(embedded.usage, estimate)
            result = EmbedResult(model, embedded.vectors, usage, embedded.usage is None)
            outcome = "done"
            return result
        except RafaleError as exc:
            outcome = "error"
            if ended is not None and not ended(exc):
                reached.clear()
            raise
        finally:
            if reached:
                self._record(owner, name, f"{name}/{provider_model}", kind, outcome, result,
                             request_id, reserved_tokens)

    @staticmethod
    async def _once(provider: Embedder, params: EmbedParams, end: float) -> Embedded:
        """One attempt, bounded by the call's deadline (the adapter's own read timeout
        bounds each wait; this bounds the whole)."""
        try:
            async with asyncio.timeout_at(end):
                return await provider.embed(params)
        except TimeoutError:
            err = ProviderTimeout(f"{provider.name}: no embeddings within the deadline")
            err.out_of_time = True
            raise err from None

    def _record(self, owner: str, provider: str, model: str, kind: Kind, outcome: Outcome,
                result: EmbedResult | None, request_id: str, reserved: int) -> None:
        """A usage row for a call that reached the provider: its input tokens (providers
        bill no output for embeddings, nor a failed call); it settles the reservation."""
        if self.usage is None:
            return
        tokens = result.usage["prompt_tokens"] if result is not None else 0
        self.usage.record(key=owner, model=model, provider=provider, kind=kind,
                          outcome=outcome, input_tokens=tokens, output_tokens=0,
                          estimated=result.estimated if result is not None else False,
                          request_id=request_id, reserved_tokens=reserved)
