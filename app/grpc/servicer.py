"""rafale.v1.Rafale: the RPCs of app/grpc/chat.py, batches.py and info.py on one servicer."""

from __future__ import annotations

import asyncio

from app.api.services import Services
from app.grpc.auth import GrpcAuth
from app.grpc.batches import BatchRpcs
from app.grpc.chat import ChatRpcs
from app.grpc.gen import rafale_pb2_grpc
from app.grpc.info import InfoRpcs
from app.subscription import Subscription


class RafaleServicer(ChatRpcs, BatchRpcs, InfoRpcs,
                     rafale_pb2_grpc.RafaleServicer):
    def __init__(self, svc: Services, auth: GrpcAuth) -> None:
        self.svc = svc
        self.auth = auth
        self.streams: set[Subscription] = set()
        self.stopping = asyncio.Event()

    def drain(self) -> None:
        """The process is stopping: end every stream its client can resume elsewhere (chat
        sessions go back to their queue whole, a batch watch just ends)."""
        self.stopping.set()
        for sub in list(self.streams):
            sub.drain()
