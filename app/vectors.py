"""Embedding vectors on the wire, pure: float32 packing, and OpenAI's response object.

Inside Rafale (provider adapter → session events → API) a vector travels the way OpenAI sends
it for `encoding_format: base64`: little-endian float32 bytes, base64-encoded. That is a quarter
of the JSON floats' size, the API passes it through untouched for a base64 request, and both
encodings a client can ask for show the same float32 values (the SDK decodes base64 to them)."""

from __future__ import annotations

import base64
import math
import sys
from array import array
from typing import Any, Literal, TypeGuard

EncodingFormat = Literal["float", "base64"]
# Characters of packed vectors per chunk event: an answer of 2048 large vectors (33 MB) goes
# as ~33 events the API reads as they come, never as one message near the session's bound.
EVENT_BYTES = 1 << 20


def pack(values: list[float]) -> str:
    """A vector as little-endian float32, base64 (OpenAI's `base64` encoding)."""
    data = array("f", values)
    if sys.byteorder != "little":
        data.byteswap()
    return base64.b64encode(data.tobytes()).decode("ascii")


def unpack(encoded: str) -> list[float]:
    """The floats of a packed vector (what the official SDK decodes a base64 answer to)."""
    data = array("f")
    data.frombytes(base64.b64decode(encoded))
    if sys.byteorder != "little":
        data.byteswap()
    return data.tolist()


def is_finite_vector(values: Any) -> TypeGuard[list[float]]:
    return isinstance(values, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in values)


def groups(vectors: list[str], limit: int = EVENT_BYTES) -> list[list[str]]:
    """Consecutive runs of packed vectors of at most `limit` characters each (one vector
    alone may be over it): one session event each, so no event is an unbounded message."""
    out: list[list[str]] = []
    size = limit
    for vector in vectors:
        if size + len(vector) > limit:
            out.append([])
            size = 0
        out[-1].append(vector)
        size += len(vector)
    return out


def usage_object(usage: dict[str, Any] | None, estimated_tokens: int) -> dict[str, int]:
    """OpenAI's embeddings usage: the provider's count, else Rafale's estimate."""
    prompt = usage.get("prompt_tokens") if usage else None
    if not isinstance(prompt, int) or isinstance(prompt, bool) or prompt < 0:
        prompt = estimated_tokens
    return {"prompt_tokens": prompt, "total_tokens": prompt}


def response(model: str, vectors: list[str], usage: dict[str, int],
             encoding: EncodingFormat) -> dict[str, Any]:
    """OpenAI's `CreateEmbeddingResponse` for packed vectors, in the encoding asked for."""
    data = [{"object": "embedding", "index": i,
             "embedding": v if encoding == "base64" else unpack(v)}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model, "usage": usage}


def estimate_tokens(inputs: list[str] | list[list[int]]) -> int:
    """Tokens of an embeddings request before the provider counts them: a token array's
    length, or about 4 characters a token of text."""
    total = 0
    for item in inputs:
        total += len(item) if isinstance(item, list) else math.ceil(len(item) / 4)
    return max(1, total)
