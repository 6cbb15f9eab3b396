"""The database: a SQLite file by default (one host), PostgreSQL when DATABASE_URL says so (any
number of API replicas and worker hosts). SQLAlchemy async on both."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, select, text
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.errors import StoreUnavailable
from app.store.models import SCHEMA_VERSION, Base, Meta

log = logging.getLogger(__name__)


def database_url(url: str, data_dir: str) -> str:
    """The async driver's URL for what an operator writes (`postgresql://...`, a sqlite path)."""
    if not url:
        path = Path(data_dir).resolve() / "rafale.db"
        return f"sqlite+aiosqlite:///{path}"
    for plain, driver in (("postgres://", "postgresql+asyncpg://"),
                          ("postgresql://", "postgresql+asyncpg://"),
                          ("sqlite://", "sqlite+aiosqlite://")):
        if url.startswith(plain):
            return driver + url.removeprefix(plain)
    return url


def new_id(prefix: str) -> str:
    """`<prefix>` + 24 hex: milliseconds first, so ids sort in creation order (the cursor of
    every list), then randomness, so they cannot be guessed."""
    return f"{prefix}{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def _sqlite_engine(url: str, begin: str) -> AsyncEngine:
    engine = create_async_engine(url, connect_args={"timeout": 60}, hide_parameters=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Several processes share the file: WAL lets readers run beside the one writer, and
        # busy_timeout makes a writer wait for its turn instead of failing.
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=60000"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        # A write transaction takes the write lock up front (IMMEDIATE): a deferred one that
        # upgrades later can fail with "database is locked" instead of waiting.
        conn.exec_driver_sql(begin)

    return engine


# SQLSTATEs of a server that is going, gone or not there yet: connection exceptions (08...),
# the admin or a crash ending sessions, refusing connections while it stops or starts (57P0x),
# out of connection slots (53300). SQLAlchemy's asyncpg dialect raises these as a plain
# DBAPIError, not an OperationalError.
_UNREACHABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached (now), as opposed to a statement it
    refused (integrity, syntax, a bug): the first kind passes, the second does not."""
    if isinstance(exc, (OperationalError, InterfaceError, OSError, PoolTimeout)):
        return True  # PoolTimeout: no connection came free, or could be made, in time
    if isinstance(exc, DBAPIError):
        state = str(getattr(exc.orig, "sqlstate", None) or "")
        return exc.connection_invalidated or state.startswith(_UNREACHABLE_STATES)
    return False


@contextmanager
def _unavailable_as_503() -> Iterator[None]:
    """A database that is down or unreachable is a 503 with Retry-After for a client (and a
    wait for a worker), not a 500; other errors (integrity, bugs) pass as they are."""
    try:
        yield
    except Exception as exc:
        if not unreachable(exc):
            raise
        log.warning("store unavailable: %s", type(exc).__name__)
        raise StoreUnavailable("The database is unavailable; try again shortly",
                               retry_after=1) from exc


class Store:
    def __init__(self, url: str, pool_size: int = 4, max_overflow: int = 4) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            db_path = url.split(":///", 1)[1]
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            self.writer = _sqlite_engine(url, "BEGIN IMMEDIATE")
            self.reader = _sqlite_engine(url, "BEGIN")
        else:
            # At most pool_size + max_overflow connections per process: the fleet's processes
            # together must stay under the server's max_connections (see README, Scaling).
            self.writer = self.reader = create_async_engine(
                url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True,
                # Error messages must not carry bound values: custom ids, prompts, answers.
                hide_parameters=True)
        self.ready = False  # True once the schema is known to be in place
        self._write = async_sessionmaker(self.writer, expire_on_commit=False)
        self._read = async_sessionmaker(self.reader, expire_on_commit=False)

    @property
    def kind(self) -> str:
        return "sqlite" if self.sqlite else "postgresql"

    def tx(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        return self._transaction(self._write)

    def ro(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A read-only transaction."""
        return self._transaction(self._read)

    @asynccontextmanager
    async def _transaction(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> AsyncIterator[AsyncSession]:
        self._check_ready()
        with _unavailable_as_503():
            async with sessions() as session, session.begin():
                yield session

    async def start(self) -> None:
        """Create the schema (or check it), safe with several processes starting at once."""
        for attempt in range(5):
            try:
                async with self.writer.begin() as conn:
                    if not self.sqlite:
                        # One process creates; the others wait here, then find it done.
                        await conn.execute(text("SELECT pg_advisory_xact_lock(7213901)"))
                    await conn.run_sync(Base.metadata.create_all)
                    version = (await conn.execute(
                        select(Meta.value).where(Meta.key == "schema_version"))).scalar()
                    if version is None:
                        await conn.execute(insert(Meta).values(key="schema_version",
                                                               value=str(SCHEMA_VERSION)))
                    elif int(version) > SCHEMA_VERSION:
                        raise RuntimeError(f"the database has schema {version}, newer than "
                                           f"this release's {SCHEMA_VERSION}: upgrade Rafale")
                self.ready = True
                break
            except (IntegrityError, ProgrammingError, DBAPIError) as exc:
                if attempt == 4:
                    raise
                log.info("schema creation raced another process (%s); again", exc)
                await asyncio.sleep(0.2 * (attempt + 1))

    def _check_ready(self) -> None:
        if not self.ready:  # the schema may not exist yet: a 503, not a 500
            raise StoreUnavailable("The database is being prepared; try again shortly",
                                   retry_after=1)

    async def start_when_reachable(self, interval: float = 2.0) -> None:
        """start(), retried until the database answers: a process comes up (and serves what
        needs no database) while the database is down, and catches up when it is back."""
        while True:
            try:
                await self.start()
                return
            except (StoreUnavailable, OSError, DBAPIError) as exc:
                log.warning("database not ready (%s); retrying in %.0fs", type(exc).__name__,
                            interval)
                await asyncio.sleep(interval)

    async def ping(self) -> None:
        async with self.ro() as s:
            await s.execute(select(1))

    async def close(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()
