"""The route dependencies, written once: `svc: Svc` and `who: Who` in a route's signature.

Both are `async def`: FastAPI runs a plain `def` dependency in the thread pool, on every
request. The caller's key name, and whether it is an admin's, were put in `request.state` by
the API-key middleware (app/api/middleware_auth.py), which runs before any route."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.services import Caller, Services


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def caller(request: Request) -> Caller:
    return Caller(request.state.owner, getattr(request.state, "admin", False))


Svc = Annotated[Services, Depends(services)]
Who = Annotated[Caller, Depends(caller)]
