"""Which batches this worker knows to be stopped (cancelled or expired), and the line calls it
runs for each, so a stop cancels them at once.

A stop is heard from anywhere (the API's cancel, another worker's expiry, our own broadcast
coming back, a group reading its batch) and may be heard several times: running lines are
cancelled once per status, and a line that sees its batch stopped takes the stop's status."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from app import control
from app.batch_states import Stopped
from app.broker import Broker
from app.errors import RafaleError


class Stops:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._stopped: dict[str, Stopped] = {}  # batch id -> the status its unrun lines take
        self._running: dict[str, set[asyncio.Task[object]]] = {}

    def status(self, batch_id: str) -> Stopped | None:
        """The status the lines of this batch take from now on, if it was stopped."""
        return self._stopped.get(batch_id)

    def note(self, batch_id: str, status: Stopped) -> None:
        """A group found its batch already stopped: its own lines will not start."""
        self._stopped.setdefault(batch_id, status)

    def stop(self, batch_id: str, status: Stopped) -> None:
        """Cancelled or expired: unstarted lines never start, running ones stop now."""
        if self._stopped.get(batch_id) == status:
            return  # heard twice (our own broadcast comes back): cancel once
        self._stopped[batch_id] = status
        for line_task in list(self._running.get(batch_id, ())):
            line_task.cancel()

    async def broadcast(self, batch_id: str, status: Stopped) -> None:
        """Stop it here and tell the fleet (best effort: every group also polls its batch)."""
        self.stop(batch_id, status)
        with contextlib.suppress(RafaleError):
            await control.publish(self.broker, control.stop_message(batch_id, status))

    def forget(self, batch_id: str) -> None:
        """The batch has ended: nothing of it runs here any more."""
        self._stopped.pop(batch_id, None)

    @contextlib.contextmanager
    def running(self, batch_id: str) -> Iterator[None]:
        """The current task is a call for a line of this batch: a stop cancels it."""
        me = asyncio.current_task()
        assert me is not None
        self._running.setdefault(batch_id, set()).add(me)
        try:
            yield
        finally:
            self._running[batch_id].discard(me)
            if not self._running[batch_id]:
                del self._running[batch_id]
