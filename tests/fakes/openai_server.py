"""A fake OpenAI-compatible server: `POST /v1/chat/completions` with real SSE streaming.

The behaviour is chosen by the requested model name, so concurrent tests never share state:

- `ok-<n>-<ms>`       n tokens, ms apart (default `ok` = 8 tokens, no delay)
- `slow-<ms>`         8 tokens spread over ms in total
- `flaky429-<k>`      429 (retry-after-ms: 50) for the first k calls with that prompt, then ok
- `fail500`           500 forever
- `stall`             one token, then silence (the connection stays open)
- `silent`            headers, then nothing at all
- `long`              a token every 50 ms for a minute (for disconnect tests)
- `midfail`           3 tokens, then an OpenAI `data: {"error": ...}` line (a failure mid-stream)
- `cut-<n>`           n tokens (of 8), then the connection is reset (no end of the body)
- `trunc-<n>`         n tokens (of 8), then the body ends cleanly, without finish or `[DONE]`
- `tools`             a call of the request's first tool, arguments streamed in pieces
- `some429-<ms>`      3 calls in 10 (whatever the prompt) get a 429; the others stream `ok`
- `auth401`, `forbidden403`  the provider refuses our key (quoting it masked, as OpenAI does)
- `nomodel`           OpenAI's 404 `model_not_found` for a model it does not have
- `reason-<r>-<ms>`   a reasoning model (DeepSeek's reasoner): r pieces of `reasoning_content`,
                      ms apart, then the 8 tokens of the answer (`reasoning_for` is the thought)

Whatever the model, a prompt containing `REJECT400` gets a 400 (a request the provider refuses).

`POST /v1/embeddings` (OpenAI's wire format, `encoding_format` float or base64): model
`emb` answers `fake_vector(input, dimensions or 8)` per input and counts a token per word (or
token id); `fail500`, `flaky429-<k>`, `auth401`, `nomodel` and `REJECT400` in an input behave
as for chat.

`POST /v1/completions` (the legacy one): `prompt` a string or a list, each prompt answered
with `text_for(model, prompt)` (choice index = prompt's position), streamed in OpenAI's
`text_completion` chunks or not; `fail500` and `nomodel` as for chat.

`n` in the body asks for that many choices: choice i > 0 carries `text_for(model, prompt, i)`.

`text_for(model, prompt)` returns exactly what a stream will contain. Every call is recorded
(`calls`), with when the client went away."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Call:
    model: str
    prompt: str
    body: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None  # stream completed normally
    closed_by_client: float | None = None  # we noticed the client went away
    status: int = 200
    auth: str = ""  # the Authorization header the gateway sent
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # set when the client left


def _parse(model: str) -> tuple[str, list[int]]:
    name, *args = model.split("-")
    return name, [int(a) for a in args if a.isdigit()]


def tokens_for(model: str, prompt: str, choice: int = 0) -> list[str]:
    kind, args = _parse(model)
    count = 8
    if kind == "ok" and args:
        count = args[0]
    elif kind == "long":
        count = 1200
    words = prompt.split() or ["empty"]
    mark = f"c{choice}." if choice else ""
    return [f"{'' if i == 0 else ' '}{mark}t{i}:{words[i % len(words)]}" for i in range(count)]


def text_for(model: str, prompt: str, choice: int = 0) -> str:
    return "".join(tokens_for(model, prompt, choice))


def reasoning_pieces(model: str, prompt: str) -> list[str]:
    kind, args = _parse(model)
    count = args[0] if kind == "reason" and args else 0
    return [f"{'' if i == 0 else ' '}thinking {i} about {prompt}" for i in range(count)]


def reasoning_for(model: str, prompt: str) -> str:
    """The `reasoning_content` a `reason-*` model streams before its answer."""
    return "".join(reasoning_pieces(model, prompt))


# OpenAI's 401 for a wrong key quotes the key, masked: the gateway must not pass it on.
AUTH_401_MESSAGE = ("Incorrect API key provided: sk-********6789. You can find your API key "
                    "at https://platform.openai.com/account/api-keys.")


def tool_arguments(prompt: str) -> str:
    """The arguments the `tools` model calls its tool with."""
    return json.dumps({"query": prompt, "limit": 3})


def fake_vector(item: str | list[int], dimensions: int = 8) -> list[float]:
    """The vector the fake answers for one embeddings input (6 decimals, as JSON carries it)."""
    seed = (item if isinstance(item, str) else ",".join(map(str, item))).encode()
    digest = hashlib.shake_256(seed).digest(dimensions)
    return [round(b / 255 - 0.5, 6) for b in digest]


def _embedding_text(item: Any) -> str:
    return item if isinstance(item, str) else ",".join(map(str, item))


class FakeOpenAI:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._attempts: dict[tuple[str, str], int] = defaultdict(int)
        self._per_model: dict[str, int] = defaultdict(int)
        # Requests being answered right now, and the most ever at once, per model.
        self.active: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def calls_for(self, prompt: str) -> list[Call]:
        return [c for c in self.calls if c.prompt == prompt]

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/completions", self.legacy)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                    shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body["model"]
        self.active[model] += 1
        self.peak[model] = max(self.peak[model], self.active[model])
        try:
            return await self._chat(request, body)
        finally:
            self.active[model] -= 1

    async def _chat(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = body["model"]
        prompt = next((m["content"] for m in reversed(body["messages"])
                       if m["role"] == "user"), "")
        call = Call(model, prompt, body, auth=request.headers.get("Authorization", ""))
        self.calls.append(call)
        kind, args = _parse(model)
        key = (model, prompt)
        self._attempts[key] += 1
        self._per_model[model] += 1
        if kind == "some429" and self._per_model[model] % 10 in (1, 4, 7):
            call.status = 429
            return _error(429, "Rate limit reached", "rate_limit_exceeded",
                          {"retry-after-ms": str(args[0] if args else 20)})
        if kind == "flaky429" and self._attempts[key] <= (args[0] if args else 1):
            call.status = 429
            return _error(429, "Rate limit reached", "rate_limit_exceeded",
                          {"retry-after-ms": "50"})
        if kind == "fail500":
            call.status = 500
            return _error(500, "The server had an error", None)
        if "REJECT400" in prompt:
            call.status = 400
            return web.json_response({"error": {
                "message": "Invalid 'messages': the provider refused this prompt",
                "type": "invalid_request_error", "param": "messages", "code": "invalid_value"}},
                status=400)
        if kind in ("auth401", "forbidden403"):
            call.status = 401 if kind == "auth401" else 403
            return _error(call.status, AUTH_401_MESSAGE, "invalid_api_key")
        if kind == "nomodel":
            call.status = 404
            return web.json_response({"error": {
                "message": f"The model `{model}` does not exist or you do not have access to it.",
                "type": "invalid_request_error", "param": None, "code": "model_not_found"}},
                status=404)
        if kind == "tools":
            return await self._tool_call(request, body, prompt)
        n = int(body.get("n") or 1)
        tokens = tokens_for(model, prompt)
        gap = {"ok": (args[1] / 1000 if len(args) > 1 else 0.0), "slow": (
            (args[0] / 1000) / len(tokens) if args else 0.1), "long": 0.05}.get(kind, 0.0)
        thoughts = reasoning_pieces(model, prompt)
        if not body.get("stream"):
            await asyncio.sleep(gap * len(tokens))
            call.finished = time.monotonic()
            return web.json_response(_completion(model, "".join(tokens), "".join(thoughts)))
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        try:
            if kind == "silent":
                await asyncio.sleep(3600)
            for i, thought in enumerate(thoughts):
                # DeepSeek's shape: the thought, and `content: null`, until the answer starts.
                piece = _chunk(model, None, role=i == 0)
                piece["choices"][0]["delta"].update(content=None, reasoning_content=thought)
                await resp.write(_sse(piece))
                await asyncio.sleep(args[1] / 1000 if len(args) > 1 else 0)
            for i, tok in enumerate(tokens):
                if gap:
                    await asyncio.sleep(gap)
                for choice in range(n):
                    text = tok if choice == 0 else tokens_for(model, prompt, choice)[i]
                    await resp.write(_sse(_chunk(model, text, role=i == 0 and not thoughts,
                                                 index=choice)))
                if kind in ("cut", "trunc") and i + 1 == (args[0] if args else 3):
                    if kind == "cut" and request.transport is not None:
                        request.transport.abort()
                    return resp
                if kind == "midfail" and i == 2:
                    await resp.write(_sse({"error": {"message": "The server had an error while "
                                           "processing your request", "type": "server_error"}}))
                    return resp
                if kind == "stall":
                    await asyncio.sleep(3600)
            for choice in range(n):
                await resp.write(_sse(_chunk(model, None, finish="stop", index=choice)))
            usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(tokens),
                     "total_tokens": len(prompt.split()) + len(tokens)}
            await resp.write(_sse({**_chunk(model, None), "choices": [], "usage": usage}))
            await resp.write(b"data: [DONE]\n\n")
            call.finished = time.monotonic()
        except (ConnectionResetError, asyncio.CancelledError):
            call.closed_by_client = time.monotonic()
            call.gone.set()
            raise
        return resp


    async def responses(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's Responses API, streamed: `ok-<n>` models' tokens as text deltas (for a
        gateway that passes requests through to a server that speaks it)."""
        body = await request.json()
        model = body["model"]
        prompt = next((i["content"] for i in reversed(body.get("input") or [])
                       if i.get("role") == "user" and isinstance(i.get("content"), str)), "")
        call = Call(model, prompt, body, auth=request.headers.get("Authorization", ""))
        self.calls.append(call)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        rid, tokens = "resp_fake", tokens_for(model, prompt)
        shell = {"id": rid, "object": "response", "model": model, "output": []}
        await resp.write(_typed({"type": "response.created",
                                 "response": {**shell, "status": "in_progress"}}))
        await resp.write(_typed({"type": "response.output_item.added", "output_index": 0,
                                 "item": {"type": "message", "id": "msg_fake", "content": []}}))
        for tok in tokens:
            await resp.write(_typed({"type": "response.output_text.delta", "output_index": 0,
                                     "item_id": "msg_fake", "content_index": 0, "delta": tok}))
        usage = {"input_tokens": len(prompt.split()), "output_tokens": len(tokens),
                 "total_tokens": len(prompt.split()) + len(tokens)}
        await resp.write(_typed({"type": "response.completed", "response": {
            **shell, "status": "completed", "usage": usage}}))
        call.finished = time.monotonic()
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        model = body["model"]
        items = body["input"]
        if isinstance(items, str) or (items and isinstance(items[0], int)):
            items = [items]
        prompt = _embedding_text(items[0]) if items else ""
        call = Call(model, prompt, body, auth=request.headers.get("Authorization", ""))
        self.calls.append(call)
        kind, args = _parse(model)
        self._attempts[(model, prompt)] += 1
        refused = self._refuse_embeddings(kind, args, model, prompt,
                                          [_embedding_text(i) for i in items])
        if refused is not None:
            call.status = refused.status
            return refused
        dims = int(body.get("dimensions") or 8)
        data = []
        for index, item in enumerate(items):
            vector = fake_vector(item, dims)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(i) if isinstance(i, list) else len(i.split()) for i in items)
        call.finished = time.monotonic()
        # Reversed on purpose: OpenAI names each vector's input by `index`, not by position.
        return web.json_response({"object": "list", "data": data[::-1], "model": model,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def legacy(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body["model"]
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        call = Call(model, prompts[0], body, auth=request.headers.get("Authorization", ""))
        self.calls.append(call)
        kind, _ = _parse(model)
        if kind == "fail500":
            call.status = 500
            return _error(500, "The server had an error", None)
        if kind not in ("ok", "slow"):
            call.status = 404
            return web.json_response({"error": {
                "message": f"The model `{model}` does not exist", "type": "invalid_request_error",
                "param": None, "code": "model_not_found"}}, status=404)
        base = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
                "model": model}
        words = sum(len(p.split()) for p in prompts)
        outs = [tokens_for(model, p) for p in prompts]
        usage = {"prompt_tokens": words, "completion_tokens": sum(len(o) for o in outs),
                 "total_tokens": words + sum(len(o) for o in outs)}

        def choice(i: int, text: str, finish: str | None) -> dict[str, Any]:
            return {"text": text, "index": i, "logprobs": None, "finish_reason": finish}

        if not body.get("stream"):
            call.finished = time.monotonic()
            return web.json_response({**base, "usage": usage, "choices": [
                choice(i, "".join(o), "stop") for i, o in enumerate(outs)]})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for i, out in enumerate(outs):
            for tok in out:
                await resp.write(_sse({**base, "choices": [choice(i, tok, None)]}))
            await resp.write(_sse({**base, "choices": [choice(i, "", "stop")]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(_sse({**base, "choices": [], "usage": usage}))
        await resp.write(b"data: [DONE]\n\n")
        call.finished = time.monotonic()
        return resp

    def _refuse_embeddings(self, kind: str, args: list[int], model: str, prompt: str,
                           texts: list[str]) -> web.Response | None:
        if kind == "fail500":
            return _error(500, "The server had an error", None)
        if kind == "flaky429" and self._attempts[(model, prompt)] <= (args[0] if args else 1):
            return _error(429, "Rate limit reached", "rate_limit_exceeded",
                          {"retry-after-ms": "50"})
        if kind == "auth401":
            return _error(401, AUTH_401_MESSAGE, "invalid_api_key")
        if kind not in ("emb", "flaky429"):
            return web.json_response({"error": {
                "message": f"The model `{model}` does not exist or you do not have access to it.",
                "type": "invalid_request_error", "param": None, "code": "model_not_found"}},
                status=404)
        if any("REJECT400" in t for t in texts):
            return web.json_response({"error": {
                "message": "Invalid 'input': the provider refused this input",
                "type": "invalid_request_error", "param": "input", "code": "invalid_value"}},
                status=400)
        return None

    async def _tool_call(self, request: web.Request, body: dict[str, Any],
                         prompt: str) -> web.StreamResponse:
        """OpenAI's way: role and the call's id and name first, then argument fragments."""
        name = body["tools"][0]["function"]["name"]
        args = tool_arguments(prompt)
        call = {"index": 0, "id": "call_fake_1", "type": "function",
                "function": {"name": name, "arguments": ""}}
        if not body.get("stream"):
            message = {"role": "assistant", "content": None,
                       "tool_calls": [{**call, "function": {"name": name, "arguments": args}}]}
            return web.json_response({**_completion(body["model"], ""), "choices": [
                {"index": 0, "finish_reason": "tool_calls", "message": message}]})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        first = _chunk(body["model"], None, role=True)
        first["choices"][0]["delta"].update(content=None, tool_calls=[call])
        await resp.write(_sse(first))
        for i in range(0, len(args), 5):
            piece = _chunk(body["model"], None)
            piece["choices"][0]["delta"]["tool_calls"] = [
                {"index": 0, "function": {"arguments": args[i:i + 5]}}]
            await resp.write(_sse(piece))
        await resp.write(_sse(_chunk(body["model"], None, finish="tool_calls")))
        await resp.write(b"data: [DONE]\n\n")
        return resp


def _typed(obj: dict[str, Any]) -> bytes:
    """A Responses API event: `event:` is its type."""
    return f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n".encode()


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _chunk(model: str, content: str | None, *, role: bool = False,
           finish: str | None = None, index: int = 0) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [{"index": index, "delta": delta,
                                         "finish_reason": finish}]}


def _completion(model: str, text: str, reasoning: str = "") -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    if reasoning:
        message["reasoning_content"] = reasoning
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": message}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def _error(status: int, message: str, code: str | None,
           headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "server_error" if status >= 500 else
                   "rate_limit_error", "param": None, "code": code}},
        status=status, headers=headers,
    )


async def _serve_forever(port: int) -> None:
    fake = FakeOpenAI()
    await fake.start(port)
    print(f"fake OpenAI on {fake.base_url}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import sys

    asyncio.run(_serve_forever(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
