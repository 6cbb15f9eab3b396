from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.harness import Stack, start_stack

StackFactory = Callable[..., Awaitable[Stack]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that stop the broker run last, so they cannot disturb the others.
    items.sort(key=lambda item: item.get_closest_marker("broker_restart") is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "broker_restart: stops and restarts RabbitMQ")


@pytest.fixture(scope="session")
def namespace() -> str:
    return os.environ.get("RAFALE_NAMESPACE") or f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


def provider_env(fake: FakeOpenAI) -> dict[str, Any]:
    return {"openai_api_key": "sk-test-not-a-real-key", "openai_base_url": fake.base_url}


# Settings that make failure paths quick to observe in tests.
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

    async def factory(name: str, **settings: Any) -> Stack:
        s = await start_stack(f"{name}-{uuid.uuid4().hex[:6]}", namespace,
                              **{**FAST, **provider_env(fake), **settings})
        made.append(s)
        return s

    yield factory
    for s in made:
        await s.remove()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        yield c
