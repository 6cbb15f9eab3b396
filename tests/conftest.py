from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.store import database_url as driver_url
from tests.fakes.deepl_server import FakeDeepL
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import PG_ADMIN, Stack, pg_admin, purge_namespace, scratch_database, start_stack

StackFactory = Callable[..., Awaitable[Stack]]
# The machine's PostgreSQL. `make_stack(..., database_url=PG)` gives the stack a database of
# its own there, dropped after the stack is stopped.
PG = "postgresql"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The unit tier first (seconds; a broken invariant shows before any process starts). Tests
    # that stop the broker run late, so they cannot disturb the others; the log audit runs
    # after everything else has logged.
    for item in items:
        if "tests/faults/" in item.nodeid:
            item.add_marker(pytest.mark.faults)
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: (item.get_closest_marker("last") is not None,
                                 item.get_closest_marker("broker_restart") is not None
                                 or item.get_closest_marker("service_restart") is not None,
                                 "tests/unit/" not in item.nodeid))


def _is_slow(item: pytest.Item) -> bool:
    """What `-m "not slow"` leaves out: tests that start stacks of their own, restart a service,
    drive a browser, or audit the whole run's logs. What stays (the unit tier and the tests on
    the shared stack) runs in about a minute."""
    fixtures = getattr(item, "fixturenames", ())
    return (any(item.get_closest_marker(m) for m in ("broker_restart", "service_restart", "last",
                                                       "slow", "faults"))
            or "make_stack" in fixtures or "browser" in fixtures)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "broker_restart: stops and restarts RabbitMQ")
    config.addinivalue_line("markers", "service_restart: stops and restarts PostgreSQL")
    config.addinivalue_line("markers", "last: runs after every other test")
    config.addinivalue_line("markers", "faults: the fault suite (tests/faults/): real processes "
                                       "through one failure each, nothing lost or repeated")
    config.addinivalue_line("markers", "slow: left out by -m 'not slow' (set for tests that "
                                       "start their own stacks, restart services or drive a "
                                       "browser)")


@pytest.fixture
async def deepl() -> AsyncIterator[FakeDeepL]:
    """A fake DeepL that accepts DEEPL_KEY."""
    server = FakeDeepL(DEEPL_KEY)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def namespace() -> Iterator[str]:
    """The run's namespace. After the run, everything on the broker under it goes (a stack a
    failed test could not remove included), with the queues of runs killed long ago: durable
    test queues never pile up on the machine's shared broker."""
    name = os.environ.get("RAFALE_NAMESPACE") or f"test-{int(time.time())}-{uuid.uuid4().hex[:6]}"
    yield name
    purge_namespace(name)


@pytest.fixture(scope="session")
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


# Every secret the tests configure; tests/test_zz_secrets.py looks for each in every log.
OPENAI_KEY = "sk-test-not-a-real-key"
ALICE = "alice-key-0123456789"
BOB = "bob-key-9876543210-bob"
DEEPL_KEY = "deepl-test-key:fx"
OLLAMA_KEY = "ollama-secret-1"
DEEPSEEK_KEY = "sk-deepseek-test-2"
SECRETS = (OPENAI_KEY, ALICE, BOB, DEEPL_KEY, OLLAMA_KEY, DEEPSEEK_KEY)


def provider_env(fake: FakeOpenAI) -> dict[str, Any]:
    return {"openai_api_key": OPENAI_KEY, "openai_base_url": fake.base_url}


# Settings every test stack starts with: failure paths quick to observe, DEBUG logs.
FAST = {
    "provider_first_byte_timeout": 2,
    "provider_idle_timeout": 1.5,
    "provider_max_attempts": 3,
    "retry_backoff_base": 0.05,
    "retry_backoff_max": 0.2,
    "stream_resume_grace": 0.5,
    "mock_delay": 0.002,
    "shutdown_grace": 5,
    "heartbeat_interval": 1,
    # Every stack logs at DEBUG (app, aio_pika, aiormq, httpx, openai), so the last test can
    # show that no configured secret reached any log.
    "log_level": "DEBUG",
}


@pytest.fixture(scope="session")
async def stack(namespace: str, fake: FakeOpenAI) -> AsyncIterator[Stack]:
    """The shared stack: one API process, two worker processes, the fake provider."""
    s = await start_stack("main", namespace, **FAST, **provider_env(fake))
    yield s
    await s.remove()


@pytest.fixture
async def make_stack(namespace: str, fake: FakeOpenAI) -> AsyncIterator[StackFactory]:
    """A private stack (own namespace) for tests that kill or reconfigure processes."""
    made: list[Stack] = []
    databases: list[str] = []

    async def factory(name: str, **settings: Any) -> Stack:
        if settings.get("database_url") == PG:
            db = f"rafale_{uuid.uuid4().hex[:12]}"
            await pg_admin(f'CREATE DATABASE "{db}"')
            databases.append(db)
            settings["database_url"] = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"
        s = await start_stack(f"{name}-{uuid.uuid4().hex[:6]}", namespace,
                              **{**FAST, **provider_env(fake), **settings})
        made.append(s)
        return s

    yield factory
    for s in made:
        await s.remove()
    for db in databases:  # after the stacks: nothing is connected any more
        await pg_admin(f'DROP DATABASE IF EXISTS "{db}"')




@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        yield c


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store's driver URL on each backend: a SQLite file of the test's own, or a scratch
    database on the machine's PostgreSQL (dropped afterwards). For tests of the store alone."""
    if request.param == "sqlite":
        yield driver_url("", str(tmp_path))
        return
    async with scratch_database() as url:
        yield driver_url(url, "")


@pytest.fixture(params=["", PG], ids=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Run a test on both stores: "" (each stack's own SQLite file) and PG (a fresh
    PostgreSQL database, made by make_stack)."""
    return str(request.param)
