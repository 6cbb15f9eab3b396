"""A stored response's worker side: the worker that answers a response records it
(`in_progress` when it starts, its output and status before the answer's last event).

The worker, not the API, writes the end: a background response is read by nobody while it is
made, and an API process may stop at any time; the worker holds the task until its final
event is confirmed, so whoever holds the answer writes it, exactly when it is whole. Writing
before the terminal event is published means a client that saw `response.completed` always
finds the stored response completed."""

from __future__ import annotations

import logging
from typing import Any

from app import events
from app.errors import RafaleError, StoreUnavailable
from app.providers.base import Delta
from app.responses.output import Final, OutputBuilder
from app.schemas import ResponseJob
from app.store import Store
from app.store import responses as stored

log = logging.getLogger(__name__)


class ResponseRecorder:
    def __init__(self, store: Store, job: ResponseJob, owner: str) -> None:
        self.store = store
        self.id = job.id
        self.background = job.background
        self.conversation = None if job.conversation is None else (job.conversation, owner)
        self.output = OutputBuilder(job.id)

    async def started(self) -> None:
        try:
            await stored.set_status(self.store, self.id, "in_progress", only_from=("queued",))
        except StoreUnavailable as exc:  # only the polled status lags; the answer goes on
            log.warning("response %s: could not mark it in progress: %s", self.id, exc.message)

    def see(self, delta: Delta) -> None:
        if delta.index == 0:
            self.output.add(delta.content, delta.reasoning, delta.tool_calls)

    async def settle(self, event: events.Event) -> events.Event:
        """Record the terminal `event`; the event to publish (an error instead of `done` when
        the answer could not be stored: a client must not see a completion that is lost)."""
        if event["type"] == "done":
            try:
                await self.store_output(Final.of_done(event))
                return event
            except RafaleError as exc:
                log.warning("response %s: could not store the answer: %s", self.id, exc.message)
                event = exc.as_event()
        if event["type"] == "error":
            try:
                await stored.finish(self.store, self.id, self._partial(), Final.of_error(event))
            except RafaleError as exc:
                log.warning("response %s: could not store its failure: %s", self.id,
                            exc.message)
        return event

    def _partial(self) -> list[dict[str, Any]]:
        """The output so far, its items marked incomplete."""
        return [self.output.item(i, "incomplete") for i in range(len(self.output.pieces))]

    async def store_output(self, final: Final) -> None:
        """Keep the finished answer: the one place its output is stored, with its turn in
        its conversation, if any (in the same transaction)."""
        await stored.finish(self.store, self.id, self.output.items(final.status), final,
                            conversation=self.conversation)

    async def outlives_session(self) -> bool:
        """Whether the answer goes on once its session is gone: a background response does,
        unless it was cancelled or deleted (what ending its session means then)."""
        if not self.background:
            return False
        try:
            return await stored.status_of(self.store, self.id) in stored.OPEN
        except RafaleError as exc:
            log.warning("response %s: could not read its status: %s", self.id, exc.message)
            return True

    async def gone(self) -> None:
        """The session went away mid-answer (cancelled, or its reader left): stopped."""
        try:
            await stored.set_status(self.store, self.id, "cancelled", only_from=stored.OPEN)
            await stored.keep_partial(self.store, self.id, self._partial())
        except RafaleError as exc:
            log.warning("response %s: could not mark it cancelled: %s", self.id, exc.message)
