"""The batch control messages: what goes on the `batch_control` fanout, which every worker
hears (the API publishes `stop` when a batch is cancelled; workers publish `stop` when one
expires and `cooldown` when a provider asks the fleet to back off).

Built by one constructor each and read by one parser, here only, so publishers and the reader
cannot drift apart; the bytes are compact JSON, keys in the order shown. A message that is not
one of these is ignored by its reader (never an error: it may come from a newer release)."""

from __future__ import annotations

import uuid
from typing import Any, Literal, TypedDict, cast, get_args

import orjson

from app.batch_states import Stopped
from app.broker import Broker


class StopMessage(TypedDict):
    """Batch `batch_id` was cancelled or expired: unstarted lines never start, running ones
    stop now, and all of them take `status`."""

    type: Literal["stop"]
    batch_id: str
    status: Stopped


class CooldownMessage(TypedDict):
    """`provider` asked for a pause (Retry-After): nobody in the fleet calls it for `seconds`."""

    type: Literal["cooldown"]
    provider: str
    seconds: float


ControlMessage = StopMessage | CooldownMessage


def stop_message(batch_id: str, status: Stopped) -> StopMessage:
    return {"type": "stop", "batch_id": batch_id, "status": status}


def cooldown_message(provider: str, seconds: float) -> CooldownMessage:
    return {"type": "cooldown", "provider": provider, "seconds": seconds}


def encode(message: ControlMessage) -> bytes:
    return orjson.dumps(message)


def parse(body: bytes) -> ControlMessage | None:
    """The message in `body`, or None when it is not a well-formed control message."""
    try:
        raw: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    kind = raw.get("type")
    if kind == "stop":
        batch_id, status = raw.get("batch_id"), raw.get("status")
        if isinstance(batch_id, str) and status in get_args(Stopped):
            return stop_message(batch_id, cast(Stopped, status))
    elif kind == "cooldown":
        provider, seconds = raw.get("provider"), raw.get("seconds")
        if isinstance(provider, str) and isinstance(seconds, int | float) \
                and not isinstance(seconds, bool):
            return cooldown_message(provider, seconds)
    return None


def message_id(message: ControlMessage) -> str:
    """`stop.<batch id>` (the same stop published twice is the same message), or a fresh
    `cooldown.<hex>`."""
    if message["type"] == "stop":
        return f"stop.{message['batch_id']}"
    return f"cooldown.{uuid.uuid4().hex}"


async def publish(broker: Broker, message: ControlMessage) -> None:
    """To every worker, confirmed, not persisted: a control message is only news while the
    fleet that hears it is up."""
    await broker.publish([(message_id(message), encode(message))], routing_key="",
                         exchange=broker.topology.batch_control, persistent=False)
