"""One batch line's provider call: chat, responses, embeddings or translate, with a batch's
retry policy, the fleet's per-provider caps (gate.py) and cooldowns, and the response cache.

A call ends in an `Outcome`, or raises `Release` when it could not start in its group's time
(rate limits, a busy fleet, another worker's identical call still running): a line is never
failed for being rate-limited, only given back to run later. A request that ran and got an
error is `failed`, with the error as its response; one cut off by the batch's window is
`expired`, an unrun request."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import Any, TypeVar

from app import control, vectors
from app.broker import Broker
from app.completions import CompletionBuilder, finish_reasons
from app.embeddings import Embeddings
from app.errors import (
    InvalidRequest,
    ProviderRateLimited,
    QuotaExceeded,
    RafaleError,
    StoreUnavailable,
)
from app.generation import CallPolicy, Ending, call_with_retries, stream_with_retries
from app.limits import Limiter
from app.metrics import Metrics
from app.providers.base import ChatParams, Delta
from app.providers.deepl import DeepLProvider, request_fields
from app.providers.registry import Registry
from app.responses.batch import ResponseLine, line_object, line_request
from app.responses.output import OutputBuilder
from app.schemas import (
    BatchLine,
    ChatBody,
    CompletionRequest,
    EmbeddingRequest,
    TranslateRequest,
    validated,
)
from app.settings import Settings
from app.store import cache, new_id
from app.store.batches import Outcome
from app.store.cache import cache_key
from app.usage import Meter, translated_chars
from app.usage import Outcome as UsageOutcome
from app.usage_recorder import UsageRecorder
from workers.batch.gate import ProviderGate
from workers.batch.outage import StoreWatch

T = TypeVar("T")

# How often a line waiting on another worker's identical call looks for its answer.
CACHE_POLL = 0.1
# The longest pause one cooldown message can impose: a provider's Retry-After is advice.
MAX_COOLDOWN = 60.0


class Release(Exception):
    """This line could not start in its group's time: give it back for a later group."""


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def failed(line: int, request_id: str, exc: RafaleError) -> Outcome:
    """A request that ran and got an error: its line goes to the error file with the status."""
    return Outcome(line, "failed", {"status_code": exc.status, "request_id": request_id,
                                    "body": exc.envelope()})


def done(line: int, request_id: str, completion: dict[str, Any],
         usage: dict[str, Any]) -> Outcome:
    """A chat line that got its answer, with the tokens it spent."""
    return Outcome(
        line, "done", {"status_code": 200, "request_id": request_id, "body": completion},
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int((usage.get("completion_tokens_details") or {})
                             .get("reasoning_tokens") or 0))


LineRequest = CompletionRequest | TranslateRequest | EmbeddingRequest | ResponseLine


def _request(endpoint: str, body: dict[str, Any]) -> LineRequest:
    """A line's body as its live route reads it; InvalidRequest is the route's own 400."""
    if endpoint == "/v1/translate":
        return validated(TranslateRequest, body)
    if endpoint == "/v1/embeddings":
        return validated(EmbeddingRequest, body)
    if endpoint == "/v1/responses":
        return line_request(body)
    request = validated(CompletionRequest, body)
    if request.conversation_id is not None:
        # Lines run in any order and at once: turns of one conversation cannot.
        raise InvalidRequest("conversation_id is not supported in a batch: each line runs on "
                             "its own, in no set order", param="conversation_id",
                             code="invalid_value")
    return request


def _ended(exc: RafaleError) -> bool:
    """Whether a line's call ended with `exc` (and is recorded): a line still rate-limited
    after every attempt is given back to run again later instead."""
    return not isinstance(exc, ProviderRateLimited) or exc.out_of_time


def batch_policy(settings: Settings) -> CallPolicy:
    """A batch has hours, not seconds: more attempts and a longer backoff than chat."""
    base = CallPolicy.from_settings(settings)
    return CallPolicy(first_byte=base.first_byte, idle=base.idle, total=base.total,
                  max_attempts=settings.batch_max_attempts, backoff_base=base.backoff_base,
                  backoff_max=max(base.backoff_max, 30.0))


class Cooldowns:
    """Fleet-wide pauses per provider: any worker that is still rate-limited after every
    attempt announces one, and every worker (itself included) holds off that provider."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._until: dict[str, float] = {}  # provider -> loop time before which nobody calls

    def hold(self, provider: str, seconds: float) -> None:
        until = asyncio.get_running_loop().time() + min(seconds, MAX_COOLDOWN)
        self._until[provider] = max(self._until.get(provider, 0.0), until)

    def remaining(self, provider: str) -> float:
        """Seconds before this provider may be called again (0 or less: now)."""
        return self._until.get(provider, 0.0) - asyncio.get_running_loop().time()

    async def wait(self, provider: str, budget_end: float) -> None:
        """Wait out this provider's cooldown, or raise `Release` if it outlasts the group."""
        loop = asyncio.get_running_loop()
        # Sleep to the end of the cooldown, then look again: another 429 may have pushed it.
        while (wait := self.remaining(provider)) > 0:
            if loop.time() + wait >= budget_end:
                raise Release
            await asyncio.sleep(wait)

    async def announce(self, provider: str, exc: ProviderRateLimited) -> None:
        """Tell the whole fleet to hold off this provider for as long as it asked (short
        waits are the line's own backoff's business)."""
        if not exc.retry_after or exc.retry_after < 1:
            return
        with contextlib.suppress(RafaleError):
            await control.publish(self.broker,
                                  control.cooldown_message(provider, exc.retry_after))


class LineCalls:
    def __init__(self, settings: Settings, registry: Registry, watch: StoreWatch,
                 metrics: Metrics, gate: ProviderGate, cooldowns: Cooldowns,
                 usage: UsageRecorder | None = None, limiter: Limiter | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.watch = watch
        self.store = watch.store
        self.metrics = metrics
        self.gate = gate
        self.cooldowns = cooldowns
        self.policy = batch_policy(settings)
        self.usage = usage
        self.limiter = limiter
        self.embeddings = Embeddings(registry, self.policy, usage=usage, metrics=metrics)

    async def answer(self, endpoint: str, owner: str, line: BatchLine, deadline: float,
                     budget_end: float) -> Outcome:
        """With RESPONSE_CACHE_TTL on, an identical deterministic request of the same key is
        answered from the cache, and identical ones in flight across the fleet share one
        provider call. The store going away never fails a line: its calls wait for the store,
        and a line that cannot start in its group's time is given back (`Release`). A body
        the live route would refuse gets that route's 400, and costs nothing more."""
        try:
            request = _request(endpoint, line.body)
        except InvalidRequest as exc:
            return failed(line.line, new_request_id(), exc)
        ttl = self.settings.response_cache_ttl
        key = cache_key(endpoint, owner, line.body) if ttl else None
        if key is None:
            return await self._call(owner, line.line, request, deadline, budget_end)
        hit = await self._claim(key, ttl, min(deadline, budget_end))
        if hit is not None:
            self.metrics.cache_hits.inc()
            # No tokens counted: nothing was spent on this line.
            return Outcome(line.line, "done", {**hit, "request_id": new_request_id()})
        try:
            outcome = await self._call(owner, line.line, request, deadline, budget_end)
        except BaseException:
            with contextlib.suppress(StoreUnavailable):  # the claim then ends with its TTL
                await asyncio.shield(cache.release(self.store, key))
            raise
        try:
            if outcome.status == "done" and outcome.response is not None:
                response = outcome.response
                await self.watch.through(lambda: cache.fulfil(self.store, key, response),
                                         budget_end)
            else:
                await self.watch.through(lambda: cache.release(self.store, key), budget_end)
        except StoreUnavailable:
            pass  # the line has its answer; the claim ends with its TTL
        return outcome

    async def _claim(self, key: str, ttl: float, until: float) -> dict[str, Any] | None:
        """A cached answer, or None once this worker holds the key's claim (it calls)."""
        # A claim outlives its caller at most this long (a worker killed mid-call).
        claim_ttl = self.settings.provider_total_timeout
        loop = asyncio.get_running_loop()
        stamp: float | None = None  # when this line last tried to claim
        while True:
            state, hit = await self._store(
                partial(cache.lookup, self.store, key, ttl, claim_ttl, mine=stamp), until)
            if hit is not None or state == "mine":
                return hit
            if state == "miss":
                stamp = time.time()
                if await self._store(
                        partial(cache.claim, self.store, key, ttl, claim_ttl, stamp), until):
                    return None
            if loop.time() >= until:
                raise Release
            await asyncio.sleep(CACHE_POLL)  # another worker is calling: its answer is ours

    async def _store(self, call: Callable[[], Awaitable[T]], until: float) -> T:
        """A store call made before the provider call: waited for through an outage, and the
        line given back if the store is still away at `until`."""
        try:
            return await self.watch.through(call, until)
        except StoreUnavailable:
            raise Release from None

    async def _call(self, owner: str, line: int, request: LineRequest,
                    deadline: float, budget_end: float) -> Outcome:
        if self.limiter is not None:
            limiter = self.limiter
            try:
                # A batch stops spending at the budget.
                await self._store(lambda: limiter.check_budget(owner),
                                  min(deadline, budget_end))
            except QuotaExceeded as exc:
                return failed(line, new_request_id(), exc)
        if isinstance(request, TranslateRequest):
            return await self._translate(owner, line, request, deadline, budget_end)
        if isinstance(request, EmbeddingRequest):
            return await self._embed(owner, line, request, deadline, budget_end)
        if isinstance(request, ResponseLine):
            return await self._respond(owner, line, request, deadline, budget_end)
        return await self._chat(owner, line, request, deadline, budget_end)

    async def _chat(self, owner: str, line: int, request: CompletionRequest, deadline: float,
                    budget_end: float) -> Outcome:
        answer = CompletionBuilder()
        ran = await self._stream(owner, line, request.model, request.to_body(), None,
                                 lambda d: answer.add(d.index, d.content, d.tool_calls,
                                                      d.reasoning), deadline, budget_end)
        if isinstance(ran, Outcome):
            return ran
        request_id, ending = ran
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": request.model, "system_fingerprint": None}
        completion = answer.build(base, finish_reasons(ending.done_event(request.model),
                                                       request.n or 1), ending.usage)
        return done(line, request_id, completion, ending.usage or {})

    async def _respond(self, owner: str, line: int, request: ResponseLine, deadline: float,
                       budget_end: float) -> Outcome:
        """A Responses line: its chat completion (or the request itself, to a server that
        speaks the Responses API, as the live route does), answered as a response object."""
        rid = new_id("resp_")
        output = OutputBuilder(rid)
        try:
            speaks = self.registry.speaks_responses(request.model)
        except RafaleError as exc:  # a model this worker does not know
            return failed(line, new_request_id(), exc)
        passed = request.passed() if speaks else None
        ran = await self._stream(owner, line, request.model, request.chat, passed,
                                 lambda d: output.add(d.content, d.reasoning, d.tool_calls)
                                 if d.index == 0 else None, deadline, budget_end)
        if isinstance(ran, Outcome):
            return ran
        request_id, ending = ran
        answer = line_object(rid, request, output, ending.done_event(request.model))
        return done(line, request_id, answer, ending.usage or {})

    async def _stream(self, owner: str, line: int, model: str, body: ChatBody,
                      responses: dict[str, Any] | None, see: Callable[[Delta], None],
                      deadline: float, budget_end: float) -> tuple[str, Ending] | Outcome:
        """A chat call with this batch's policy, caps and cooldowns, each delta shown to
        `see`: (request id, how it ended), or the line's Outcome when it did not succeed."""
        request_id = new_request_id()
        provider_name = model.partition("/")[0]
        meter = Meter(body.messages)
        try:
            provider_name, provider_model = self.registry.split(model)
            await self.cooldowns.wait(provider_name, budget_end)
            params = ChatParams(provider_model, body.messages, body.temperature, body.max_tokens,
                                body.extra, responses=responses)
            ending = Ending()
            stream = stream_with_retries(
                self.registry.get(provider_name), params, self.policy, deadline=deadline,
                label=f"batch line {line}", metrics=self.metrics)
            async with self.gate.slot(provider_name, budget_end), aclosing(stream) as deltas:
                meter.start(provider_name, provider_model)
                async for delta in deltas:
                    see(delta)
                    ending.see(delta)
                    meter.see(delta)
        except RafaleError as exc:
            if _ended(exc):
                self._spent(meter, owner, "error", request_id)
            return await self._failure(line, request_id, provider_name, exc)
        except asyncio.CancelledError:
            self._spent(meter, owner, "cancelled", request_id)  # what it made until then
            raise
        self._spent(meter, owner, "done", request_id)
        return request_id, ending

    async def _translate(self, owner: str, line: int, request: TranslateRequest,
                         deadline: float, budget_end: float) -> Outcome:
        """A DeepL line, with the same retry policy as chat lines (DeepL has no stream)."""
        request_id = new_request_id()
        target = ""  # set once the line is valid: from then on, it reaches DeepL
        try:
            fields = request_fields(request.model_dump(exclude_none=True))
            self.registry.split(f"deepl/{fields['target_lang']}")
            provider = self.registry.get("deepl")
            assert isinstance(provider, DeepLProvider)
            deepl: DeepLProvider = provider
            target = fields["target_lang"]

            async def once() -> list[dict[str, Any]]:
                await self.cooldowns.wait("deepl", budget_end)
                async with self.gate.slot("deepl", budget_end):
                    return await deepl.translate(fields)

            translations = await call_with_retries(
                once, "deepl", self.policy, deadline=deadline,
                label=f"batch line {line}", metrics=self.metrics)
        except RafaleError as exc:
            if target and _ended(exc):
                self._translated(owner, target, 0, "error", request_id)
            return await self._failure(line, request_id, "deepl", exc)
        self._translated(owner, target, translated_chars(fields), "done", request_id)
        return Outcome(line, "done", {"status_code": 200, "request_id": request_id,
                                           "body": {"translations": translations}})

    async def _embed(self, owner: str, line: int, request: EmbeddingRequest, deadline: float,
                     budget_end: float) -> Outcome:
        """An embeddings line: the live route's provider call (app/embeddings.py) with this
        batch's policy, caps and cooldowns; its usage is recorded there."""
        request_id = new_request_id()
        body = request.to_body()
        try:
            made = await self.embeddings.create(
                owner, request.model, body.inputs, dimensions=body.dimensions, user=body.user,
                extra=body.extra, request_id=request_id, kind="batch", deadline=deadline,
                slot=lambda name: self.gate.slot(name, budget_end),
                before=lambda name: self.cooldowns.wait(name, budget_end), ended=_ended)
        except RafaleError as exc:
            return await self._failure(line, request_id, request.model.partition("/")[0], exc)
        answer = vectors.response(request.model, made.vectors, made.usage,
                                  request.encoding_format)
        return Outcome(line, "done", {"status_code": 200, "request_id": request_id,
                                      "body": answer},
                       input_tokens=made.usage["prompt_tokens"])

    def _spent(self, meter: Meter, owner: str, outcome: UsageOutcome, request_id: str) -> None:
        """Record a chat line's provider call (none when the line never reached one)."""
        if self.usage is not None and meter.provider:
            self.usage.record_call(meter, key=owner, kind="batch", outcome=outcome,
                                   request_id=request_id)

    def _translated(self, owner: str, target: str, chars: int, outcome: UsageOutcome,
                    request_id: str) -> None:
        """Record a DeepL line: the characters it translated are its tokens (none if failed)."""
        if self.usage is not None:
            self.usage.record(key=owner, model=f"deepl/{target}", provider="deepl",
                              kind="batch", outcome=outcome, input_tokens=chars,
                              output_tokens=0, estimated=False, request_id=request_id)

    async def _failure(self, line: int, request_id: str, provider: str,
                       exc: RafaleError) -> Outcome:
        if exc.out_of_time:
            # Cut off by the batch's window (a timeout, or no time left to retry): an unrun
            # request, not the provider's answer.
            return Outcome(line, "expired")
        if isinstance(exc, ProviderRateLimited):
            # Still rate-limited after every attempt: run it later, never fail it for that.
            await self.cooldowns.announce(provider, exc)
            raise Release
        return failed(line, request_id, exc)

