"""What a request handler may use, built once per process by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from app.broker import Broker
from app.fleet import Fleet
from app.generation import Limits
from app.providers.registry import Registry
from app.relay import Relay
from app.settings import Settings


@dataclass(slots=True)
class Services:
    settings: Settings
    broker: Broker
    relay: Relay
    registry: Registry
    fleet: Fleet
    limits: Limits

    # Until API keys exist (issue: API keys), every session belongs to the anonymous owner.
    # The owner is part of the session queue's name, so another owner's lookup finds nothing.
    owner_tag: str = "anon"


async def services(request: Request) -> Services:
    # async: a plain `def` dependency would run in the thread pool on every request.
    svc: Services = request.app.state.services
    return svc
