"""Provider slots: an exact fleet-wide semaphore per capped provider, kept in the store.

Taking a slot is one conditional UPDATE (free, or its lease ran out); only the holder of the
token it got can give it back. Workers renew their leases while they live, so a killed worker
holds its slots for one lease at most."""

from __future__ import annotations

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.store.db import Store
from app.store.models import SlotRow


async def ensure(store: Store, caps: dict[str, int]) -> None:
    """Slots 0..cap-1 for each provider; the slots of a lowered cap go."""
    insert = sqlite_insert if store.sqlite else pg_insert
    async with store.tx() as s:
        for provider, cap in caps.items():
            await s.execute(insert(SlotRow).on_conflict_do_nothing(),
                            [{"provider": provider, "slot": i} for i in range(cap)])
            await s.execute(delete(SlotRow).where(SlotRow.provider == provider,
                                                  SlotRow.slot >= cap))


async def acquire(store: Store, provider: str, worker: str, token: str, now: float,
                  lease: float) -> int | None:
    """Take one free slot for `token`; None when every slot is held."""
    free = or_(SlotRow.worker.is_(None), SlotRow.lease_until < now)
    # SKIP LOCKED (PostgreSQL; SQLite has one writer at a time anyway): concurrent takers
    # each get a different free slot instead of queueing on the same row.
    first_free = (select(SlotRow.slot).where(SlotRow.provider == provider, free)
                  .order_by(SlotRow.slot).limit(1).with_for_update(skip_locked=True)
                  .scalar_subquery())
    async with store.tx() as s:
        # The condition is checked again on the row itself, so a slot is never taken twice.
        return (await s.execute(
            update(SlotRow)
            .where(SlotRow.provider == provider, SlotRow.slot == first_free, free)
            .values(worker=worker, token=token, lease_until=now + lease)
            .returning(SlotRow.slot))).scalar_one_or_none()


async def release(store: Store, provider: str, slot: int, token: str) -> None:
    async with store.tx() as s:
        await s.execute(update(SlotRow)
                        .where(SlotRow.provider == provider, SlotRow.slot == slot,
                               SlotRow.token == token)
                        .values(worker=None, token=None, lease_until=None))


async def renew(store: Store, worker: str, until: float) -> None:
    async with store.tx() as s:
        await s.execute(update(SlotRow).where(SlotRow.worker == worker)
                        .values(lease_until=until))
