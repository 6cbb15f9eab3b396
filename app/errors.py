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


class BrokerUnavailable(RafaleError):
    """RabbitMQ is not reachable or did not confirm the publish; try again later."""

    status = 503
    type = "service_unavailable"
    code = "broker_unavailable"


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


class ProviderTimeout(ProviderError):
    """The provider did not answer (or stalled) within a timeout."""

    status = 504
    code = "provider_timeout"
    retryable = True


class ProviderAuthError(ProviderError):
    """The provider refused our credentials (401/403)."""

    code = "provider_auth_error"


class ProviderBadRequest(ProviderError):
    """The provider rejected the request itself (400/404/422)."""

    status = 400
    type = "invalid_request_error"
    code = "provider_bad_request"


# --- lanes (S2)


class QueueFull(RafaleError):
    """The task's lane holds TASK_QUEUE_MAX tasks (or TASK_QUEUE_MAX_BYTES), so RabbitMQ
    refused the publish: nothing was queued, and the same request a little later will be."""

    status = 503
    type = "service_unavailable"
    code = "queue_full"
