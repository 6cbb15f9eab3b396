"""One exception tree. Each class knows its HTTP status, OpenAI error type and whether the
worker may retry it; `envelope()` renders OpenAI's `{"error": {...}}` shape."""

from __future__ import annotations

from typing import Any

from app import events


class RafaleError(Exception):
    """Base of every error Rafale reports to a client."""

    status = 500
    type = "server_error"
    code: str | None = None
    retryable = False
    # Sent as `x-should-retry: false`: the official SDK would otherwise retry a 409.
    final = False
    # Set when a call gave up because its deadline came, not because of what the provider said.
    out_of_time = False
    # Extra response headers (the x-ratelimit-* of a refused request).
    headers: dict[str, str] = {}

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def as_event(self) -> events.ErrorEvent:
        """The `error` event a stream ends with (a numbering sender sets seq and attempt)."""
        return events.error(self.message, code=self.code, param=self.param,
                            error_type=self.type, status=self.status,
                            retry_after=self.retry_after)

    @classmethod
    def from_event(cls, event: events.ErrorEvent) -> RafaleError:
        """The error a worker reported in an event, to answer an HTTP request with."""
        # Read leniently: the event may come from a worker of another version.
        err = cls(str(event.get("message") or "the request failed"), code=event.get("code"),
                  param=event.get("param"), retry_after=event.get("retry_after"))
        err.status = int(event.get("status") or 500)
        err.type = str(event.get("error_type") or "server_error")
        return err

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(RafaleError):
    """The request is malformed or asks for something impossible."""

    status = 400
    type = "invalid_request_error"


class Unauthorized(RafaleError):
    """No or a wrong API key."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(RafaleError):
    """The object does not exist (or belongs to another key)."""

    status = 404
    type = "invalid_request_error"


class ModelNotFound(NotFound):
    """The model name resolves to no provider."""

    code = "model_not_found"


class Conflict(RafaleError):
    """The object is in a state that forbids this (cancel a finished batch, ...)."""

    status = 409
    type = "invalid_request_error"
    final = True


class PayloadTooLarge(RafaleError):
    """The body is larger than MAX_BODY_BYTES."""

    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class UnsupportedMediaType(InvalidRequest):
    """A JSON route got a body that does not say it is JSON (no or another content-type)."""

    status = 415
    code = "unsupported_media_type"


class BrokerUnavailable(RafaleError):
    """RabbitMQ is not reachable or did not confirm the publish; try again later."""

    status = 503
    type = "service_unavailable"
    code = "broker_unavailable"


class StreamInterrupted(RafaleError):
    """An answer a request waits on stopped before its end: the broker connection dropped
    under its session. The task goes on; asking again is safe."""

    status = 503
    code = "stream_interrupted"

    def __init__(self) -> None:
        super().__init__("the answer was interrupted (the broker connection dropped); retry",
                         retry_after=1)


class StoreUnavailable(RafaleError):
    """The database is not reachable; try again later."""

    status = 503
    type = "service_unavailable"
    code = "store_unavailable"


class SessionGone(RafaleError):
    """The client's session queue no longer exists: nobody is listening."""

    status = 410
    type = "invalid_request_error"
    code = "session_gone"


class SessionBusy(RafaleError):
    """Another connection is still reading this session."""

    status = 409
    type = "invalid_request_error"
    code = "session_busy"


class ClientGone(RafaleError):
    """The client closed the request while its answer was being made (nginx's 499)."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed"


class TaskParked(RafaleError):
    """The task crashed workers too often and was moved to the dead-letter queue."""

    code = "task_dead_lettered"


# --- per-key limits (app/limits.py): OpenAI's 429s, so the official SDK backs off by itself


class RateLimited(RafaleError):
    """A key asked for more requests or tokens per minute than it may (KEY_RPM, KEY_TPM)."""

    status = 429
    type = "requests"  # or "tokens", as OpenAI's 429 names the limit that was hit
    code = "rate_limit_exceeded"


class TooManySessions(RafaleError):
    """A key holds KEY_MAX_SESSIONS sessions that are queued, running or not read yet."""

    status = 429
    type = "requests"
    code = "too_many_sessions"


class QuotaExceeded(RafaleError):
    """A key spent its KEY_BUDGET_USD for this calendar month (UTC)."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"
    final = True  # retrying will not help before the month ends


class StorageQuotaExceeded(RafaleError):
    """A key's files would take more than KEY_MAX_STORAGE_BYTES."""

    status = 429
    type = "insufficient_quota"
    code = "storage_quota_exceeded"
    final = True


class FleetBusy(RafaleError):
    """The fleet holds MAX_SESSIONS live sessions (all keys together): the broker's limit."""

    status = 503
    type = "service_unavailable"
    code = "too_many_sessions"


class ProviderError(RafaleError):
    """The provider failed; the subclass says how."""

    status = 502
    type = "provider_error"
    code = "provider_error"


class ProviderRateLimited(ProviderError):
    """The provider answered 429 (not a quota error)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retryable = True


class ProviderQuotaExceeded(ProviderError):
    """The provider answered 429 insufficient_quota: retrying will not help."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class ProviderUnavailable(ProviderError):
    """5xx, 408, 409 or a connection failure at the provider."""

    retryable = True


class ProviderUnreachable(ProviderUnavailable):
    """No connection could be made to the provider (refused, unknown host): nothing timed out."""

    code = "provider_unreachable"


class ProviderTimeout(ProviderError):
    """The provider did not answer (or stalled) within a timeout."""

    status = 504
    code = "provider_timeout"
    retryable = True


class ProviderAuthError(ProviderError):
    """The provider refused Rafale's credentials (401/403): the operator's key, not the
    caller's, so a 502 that never carries the provider's text (it may quote the key)."""

    code = "provider_auth_error"

    @classmethod
    def refused(cls, provider: str, status: int) -> ProviderAuthError:
        return cls(f"{provider} refused Rafale's credentials ({status}): the operator must "
                   "check this provider's API key")


class ProviderBadRequest(ProviderError):
    """The provider refused the request itself (a 4xx that is not about our key, its rate or
    its health): the client gets the provider's status, type, code and param, so an unknown
    model is OpenAI's 404 `model_not_found` (the SDK's NotFoundError), as it meant it."""

    status = 400
    type = "invalid_request_error"
    code = "provider_bad_request"

    def __init__(self, message: str, *, status: int = 400, code: str | None = None,
                 param: str | None = None, error_type: str | None = None) -> None:
        super().__init__(message, code=code, param=param)
        self.status = status if 400 <= status < 500 else 400
        if error_type:
            self.type = error_type


# --- secure defaults (issue 10, S1)


class AmbiguousCredentials(Unauthorized):
    """Two keys in one request (two Authorization headers, or a bearer key and a different
    x-api-key): refused rather than guessing which one the caller meant."""

    code = "ambiguous_api_key"


class TooManyAuthFailures(RafaleError):
    """This client address failed to authenticate too often lately."""

    status = 429
    type = "rate_limit_error"
    code = "too_many_failed_authentications"


class AdminOnly(RafaleError):
    """Operator detail (queue depths, workers, broker errors) for keys in RAFALE_ADMIN_KEYS."""

    status = 403
    type = "invalid_request_error"
    code = "admin_key_required"
    final = True


class RequestTimeout(RafaleError):
    """The request body did not arrive within REQUEST_BODY_TIMEOUT."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


# --- lanes (S2)


class QueueFull(RafaleError):
    """The task's lane holds TASK_QUEUE_MAX tasks (or TASK_QUEUE_MAX_BYTES), so RabbitMQ
    refused the publish: nothing was queued, and the same request a little later will be."""

    status = 503
    type = "service_unavailable"
    code = "queue_full"


# The error type of a model that needs one of several fields: reported as OpenAI's
# `missing_required_parameter`, not as an invalid value.
MISSING_ONE_OF = "missing_one_of"


def describe_validation(errors: list[Any]) -> InvalidRequest:
    """The first of pydantic's problems with a request, phrased for a person, with OpenAI's
    `param` and `code`: what a route answers, and a batch line gets, for a body it refuses."""
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ())]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]  # OpenAI names the parameter itself, wherever it came from
    param = ".".join(loc) or None
    kind = err.get("type", "")
    if kind == "json_invalid":
        ctx = err.get("ctx", {}).get("error", "")
        return InvalidRequest(f"The body is not valid JSON ({ctx})", code="invalid_json")
    if kind == MISSING_ONE_OF:  # a model that needs one of several fields (ChatRequest)
        return InvalidRequest(str(err.get("msg")), param=err.get("ctx", {}).get("param"),
                              code="missing_required_parameter")
    if tuple(err.get("loc", ())) == ("body",):  # the body as a whole
        if kind == "missing":
            return InvalidRequest("The request has no body: send a JSON object",
                                  code="missing_required_parameter")
        if kind in ("model_attributes_type", "dict_type"):
            return InvalidRequest("The body must be a JSON object", code="invalid_type")
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'", param=param,
                              code="missing_required_parameter")
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    code = "invalid_type" if kind.endswith(("_type", "_parsing")) else "invalid_value"
    where = f"Invalid '{param}': " if param else ""
    return InvalidRequest(f"{where}{msg}", param=param, code=code)
