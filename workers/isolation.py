"""Which chat task killed the worker: poison isolation, told from a delivery's headers.

A worker runs up to WORKER_CONCURRENCY tasks side by side, so when one of them kills the
process every task it held goes back to its lane, and RabbitMQ counts a delivery against each
(`x-delivery-count`; on 3.10 a requeue counts too). Charging all of them would park healthy
answers with the one poison task. So:

- In a lane, a return proves nothing. A task returned ISOLATE_AFTER times (two crowds it was
  in died) is moved, as a fresh copy, to the quarantine queue.
- The quarantine queue is consumed with prefetch 1 by each worker: a suspect never runs beside
  another suspect, so a worker that dies while running one is charged to it. After
  TASK_MAX_DELIVERIES such deaths the task is parked (dead-lettered, at least once) and its
  client is told (`task_dead_lettered`).
- A task given back on purpose (SIGTERM past SHUTDOWN_GRACE, a shutdown before it started) is
  never charged: the worker publishes a fresh copy (whose count starts at 0) and acks the
  delivery, instead of a requeue that RabbitMQ would count.

Copies carry what earlier copies went through in two headers, so attempts keep numbering on
(event ids `<attempt>-<seq>` stay increasing for Last-Event-ID) and crashes already charged
stay charged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Attempts made by earlier copies of this task (each published events numbered by it).
ATTEMPTS = "x-rafale-attempts"
# Deaths already charged to the task by earlier copies in the same queue.
CRASHES = "x-rafale-crashes"
# Returns from a lane (crowds that died with the task in them) before it is run alone.
ISOLATE_AFTER = 2


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a task, read from its headers."""

    earlier_attempts: int  # made by earlier copies
    returns: int  # times this copy went back to its queue (x-delivery-count)
    charged: int  # deaths charged by earlier copies in this queue

    @classmethod
    def of(cls, headers: dict[str, Any] | None) -> Delivery:
        h = headers or {}
        return cls(_int(h.get(ATTEMPTS)), _int(h.get("x-delivery-count")), _int(h.get(CRASHES)))

    @property
    def attempt(self) -> int:
        """This delivery's attempt number: 1 for a task never delivered before."""
        return self.earlier_attempts + self.returns + 1

    @property
    def crashes(self) -> int:
        """Deaths counted against the task in its current queue: this copy's returns (a worker
        died or lost its connection while holding it) and those of earlier copies."""
        return self.charged + self.returns

    def suspect(self) -> bool:
        """A lane task to run alone from now on."""
        return self.crashes >= ISOLATE_AFTER

    def copy(self, *, charged: int) -> dict[str, Any]:
        """The headers of a fresh copy that takes over from this delivery."""
        return {ATTEMPTS: self.attempt, CRASHES: charged}

    def moved(self) -> dict[str, Any]:
        """A copy for the quarantine queue: deaths among a crowd are not charged there."""
        return self.copy(charged=0)

    def handed_back(self) -> dict[str, Any]:
        """A copy given back on purpose (a drain): charged what this one was, nothing more."""
        return self.copy(charged=self.crashes)

    def parked_attempt(self, max_deliveries: int) -> int:
        """An attempt number above any this task's copies can have used: the `error` event
        that tells its client it was parked must come after all of them."""
        return self.earlier_attempts + self.returns + max_deliveries + 1
