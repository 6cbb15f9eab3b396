"""ListModels, GetStats and Translate: what `/v1/models`, `/stats` and `/v1/translate` answer."""

from __future__ import annotations

from google.protobuf import struct_pb2

from app.api.services import Services
from app.api.stats import require_admin, stats_figures
from app.api.translation import translate
from app.grpc import convert
from app.grpc.calls import Call, unary
from app.grpc.gen import rafale_pb2 as pb


class InfoRpcs:
    svc: Services

    @unary
    async def ListModels(self, request: pb.ListModelsRequest, call: Call) -> pb.ModelList:
        return pb.ModelList(data=[pb.Model(id=mid, owned_by=owner)
                                  for mid, owner in self.svc.registry.models()])

    @unary
    async def GetStats(self, request: pb.StatsRequest, call: Call) -> struct_pb2.Struct:
        require_admin(call.who, "GetStats")
        return convert.struct(await stats_figures(self.svc))

    @unary
    async def Translate(self, request: pb.TranslateRequest,
                        call: Call) -> pb.TranslateResponse:
        translations = await translate(self.svc, call.who, convert.translate_request(request),
                                       request_id=call.request_id)
        return pb.TranslateResponse(translations=[
            pb.Translation(detected_source_language=t.get("detected_source_language") or "",
                           text=t.get("text") or "") for t in translations])
