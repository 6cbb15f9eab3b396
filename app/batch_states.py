"""The words a batch's and a line's status may hold, and how a batch that ends early ends.

Their own module, free of the store, so wire messages (app/control.py) and workers can name
them without importing SQLAlchemy. The store's columns are plain strings to the ORM; these types
hold at app/store/batches.py's edge and everywhere a status is written or compared."""

from __future__ import annotations

from typing import Literal

BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed",
                      "expired", "cancelling", "cancelled"]
ItemStatus = Literal["pending", "running", "done", "failed", "cancelled", "expired"]
# How a batch is to end early (`BatchRow.ending`; None: it runs to the end and completes).
BatchEnding = Literal["cancel", "expire"]
# What a batch that ended early becomes, and what its lines that never ran become.
Stopped = Literal["cancelled", "expired"]
# A line's result as a worker records it; `pending` gives the line back to run later.
OutcomeStatus = Literal["done", "failed", "cancelled", "expired", "pending"]

TERMINAL: frozenset[BatchStatus] = frozenset({"completed", "failed", "expired", "cancelled"})


def stopped_status(ending: str) -> Stopped:
    """How a batch ended early (its `ending`) -> the status it and its unrun lines take."""
    return "expired" if ending == "expire" else "cancelled"
