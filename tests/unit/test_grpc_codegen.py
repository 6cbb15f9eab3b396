"""The committed gRPC stubs are exactly what app/grpc/rafale.proto generates today."""

from __future__ import annotations

from app.grpc import codegen


def test_generated_stubs_match_the_proto() -> None:
    stale = codegen.stale()
    assert not stale, (f"{stale} differ from what app/grpc/rafale.proto generates: run "
                       "`python -m app.grpc.codegen` and commit the result")


def test_the_service_has_the_issue_s_rpcs() -> None:
    from app.grpc.gen import rafale_pb2

    service = rafale_pb2.DESCRIPTOR.services_by_name["Rafale"]
    assert rafale_pb2.DESCRIPTOR.package == "rafale.v1"
    assert {m.name for m in service.methods} >= {
        "ChatStream", "GenerateStream", "SendSingle", "GetEmbedding", "Translate",
        "CreateBatch", "CheckBatchStatus", "ListBatches", "CancelBatch", "WatchBatch",
        "DownloadBatchResults", "ListModels", "GetStats"}
    streams = {m.name for m in service.methods if m.server_streaming}
    assert streams == {"ChatStream", "GenerateStream", "WatchBatch", "DownloadBatchResults"}


def test_only_the_generator_s_version_is_ignored() -> None:
    made = (codegen.GEN / "rafale_pb2.py").read_bytes()
    assert b"<version>" in codegen.comparable(made)
    other = made.replace(b"Protobuf Python Version: ", b"Protobuf Python Version: 99.")
    assert codegen.comparable(other) == codegen.comparable(made)
    assert codegen.comparable(made.replace(b"rafale.v1", b"rafale.v2")) != codegen.comparable(made)
