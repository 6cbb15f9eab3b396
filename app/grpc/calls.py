"""What every RPC goes through before and after its own code: the caller's key, a request id,
and Rafale's errors turned into gRPC statuses (app/grpc/errors.py). A handler is written as
`async def Name(self, request, call: Call)`; `unary` / `streaming` give it grpc's signature."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from pydantic import ValidationError

from app.api.services import Caller, Services
from app.errors import RafaleError, describe_validation
from app.grpc.auth import GrpcAuth
from app.grpc.errors import abort

log = logging.getLogger(__name__)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
_REQUEST_ID_MAX = 128


class Door(Protocol):
    svc: Services
    auth: GrpcAuth


@dataclass(frozen=True, slots=True)
class Call:
    who: Caller
    request_id: str
    context: grpc.aio.ServicerContext

    def time_left(self) -> float | None:
        """Seconds until the client's deadline (None: it set none)."""
        left = self.context.time_remaining()
        return None if left is None else float(left)


async def _call(door: Door, context: grpc.aio.ServicerContext) -> Call:
    given = dict(context.invocation_metadata() or ()).get("x-request-id")
    # The client's id when it is a sane one (it ends up in logs), else a new one.
    request_id = (given if isinstance(given, str) and 0 < len(given) <= _REQUEST_ID_MAX
                  and given.isprintable() else uuid.uuid4().hex)
    return Call(await door.auth.caller(context), request_id, context)


def _as_rafale(exc: Exception) -> RafaleError:
    if isinstance(exc, RafaleError):
        return exc
    if isinstance(exc, ValidationError):
        return describe_validation(exc.errors())
    return RafaleError("internal error", code="internal_error")


def unary(fn: Callable[[Any, Req, Call], Awaitable[Resp]]
          ) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    @functools.wraps(fn)
    async def handler(self: Door, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await fn(self, request, await _call(self, context))
        except (RafaleError, ValidationError) as exc:
            await abort(context, _as_rafale(exc))
            raise  # not reached: abort raises
        except Exception as exc:
            if _is_abort(exc):
                raise
            log.exception("%s failed", fn.__name__)
            await abort(context, _as_rafale(exc))
            raise

    return handler


def streaming(fn: Callable[[Any, Req, Call], AsyncIterator[Resp]]
              ) -> Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    @functools.wraps(fn)
    async def handler(self: Door, request: Req,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
        try:
            call = await _call(self, context)
            # aclosing: a client that cancels must close the handler's generator (and the
            # session subscription behind it) now, not when the garbage collector runs.
            async with aclosing(fn(self, request, call)) as items:  # type: ignore[type-var]
                async for item in items:
                    yield item
        except (RafaleError, ValidationError) as exc:
            await abort(context, _as_rafale(exc))
        except Exception as exc:
            if _is_abort(exc):
                raise
            log.exception("%s failed", fn.__name__)
            await abort(context, _as_rafale(exc))

    return handler


def _is_abort(exc: Exception) -> bool:
    # What context.abort raises (grpc's internal AbortError) must pass through untouched.
    return type(exc).__name__ == "AbortError"
