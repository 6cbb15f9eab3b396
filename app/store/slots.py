"""Provider slots: an exact fleet-wide semaphore per capped provider, kept in the store.

Taking a slot is one conditional UPDATE (free, or its lease ran out); only the holder of the
token it got can give it back. Workers renew their leases while they live, so a killed worker
holds its slots for one lease at most."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Table, bindparam, delete, or_, select, update
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
                  lease: float, limit: int = 1) -> list[int]:
    """Take up to `limit` free slots under `token`; [] when every slot is held."""
    free = or_(SlotRow.worker.is_(None), SlotRow.lease_until < now)
    async with store.tx() as s:
        # Pick, then take, in one transaction: SQLite's has the only writer; on PostgreSQL the
        # picked rows are locked and concurrent takers skip them for other free ones. (One
        # statement, with the pick as an IN subquery, PostgreSQL took more rows than asked.)
        picked = list((await s.execute(
            select(SlotRow.slot).where(SlotRow.provider == provider, free)
            .order_by(SlotRow.slot).limit(limit).with_for_update(skip_locked=True))).scalars())
        if not picked:
            return []
        return list((await s.execute(
            update(SlotRow)
            .where(SlotRow.provider == provider, SlotRow.slot.in_(picked), free)
            .values(worker=worker, token=token, lease_until=now + lease)
            .returning(SlotRow.slot))).scalars())


async def release(store: Store, provider: str, held: Sequence[tuple[int, str]]) -> None:
    """Give back these (slot, token) pairs; a slot whose token changed is not ours any more."""
    if not held:
        return
    table = Table("provider_slots", SlotRow.metadata)  # Core, so executemany applies
    t = table.c
    stmt = (update(table)
            .where(t.provider == provider, t.slot == bindparam("k_slot"),
                   t.token == bindparam("k_token"))
            .values(worker=None, token=None, lease_until=None))
    async with store.tx() as s:
        await s.execute(stmt, [{"k_slot": slot, "k_token": token} for slot, token in held])


async def renew(store: Store, worker: str, until: float) -> None:
    async with store.tx() as s:
        await s.execute(update(SlotRow).where(SlotRow.worker == worker)
                        .values(lease_until=until))
