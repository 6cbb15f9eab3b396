"""A batch message the broker dead-lettered: it kept failing, or killed the workers that took
it. Its lines fail (with the parked-task error, a 500), or its plan fails the batch, rather
than hold the batch open until it expires. Lines that already have a result keep it: the
claim takes only lines that are still open."""

from __future__ import annotations

import uuid

from app.errors import TaskParked
from app.schemas import BatchTask
from app.store import Store, batches
from workers.batch.calls import failed, new_request_id


async def settle_dead(store: Store, task: BatchTask, deliveries: int) -> None:
    """Give the dead-lettered message's lines (or plan) their final, failed result; the
    caller then finalizes the batch."""
    err = TaskParked(f"this failed on {deliveries} workers and was set aside")
    if task.kind == "batch_items":
        token = uuid.uuid4().hex
        lines = await batches.claim(store, task.batch_id, (ln.line for ln in task.lines), True,
                                    token)
        await batches.record(store, task.batch_id, token,
                             [failed(line, new_request_id(), err) for line in lines])
    elif task.kind == "batch_plan":
        await batches.fail_validation(store, task.batch_id, [{
            "code": "server_error", "line": None, "message": err.message, "param": None}])
