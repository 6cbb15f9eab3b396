"""`python -m app.grpc.codegen`: regenerate app/grpc/gen/ from app/grpc/rafale.proto.

The generated files are committed (a deployment needs no protoc); tests/unit/test_grpc_codegen.py
regenerates them into a temporary directory and compares, so the proto and the code never
drift apart."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "rafale.proto"
GEN = HERE / "gen"
FILES = ("rafale_pb2.py", "rafale_pb2.pyi", "rafale_pb2_grpc.py")
# protoc writes a top-level import into the service module; the stubs live in a package.
_FLAT_IMPORT = "import rafale_pb2 as rafale__pb2"
_PACKAGE_IMPORT = "from app.grpc.gen import rafale_pb2 as rafale__pb2"


# Which protoc made a file is not part of what it says: a newer grpcio-tools from a fresh
# install must not fail the check while the proto and the code still agree.
_VERSIONS = re.compile(
    rb"Protobuf Python Version: [^\n]*|GRPC_GENERATED_VERSION = '[^']*'"
    rb"|(ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,)"
    rb"\s*\d+,\s*\d+,\s*\d+,")


def comparable(data: bytes) -> bytes:
    return _VERSIONS.sub(b"<version>", data)


def generate(out: Path) -> None:
    """Write the three generated files into `out`."""
    from grpc_tools import protoc  # a build-time tool: imported only when generating

    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    code = protoc.main(["grpc_tools.protoc", f"-I{HERE}", f"-I{include}",
                        f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
                        str(PROTO)])
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    service = out / "rafale_pb2_grpc.py"
    service.write_text(service.read_text().replace(_FLAT_IMPORT, _PACKAGE_IMPORT))


def stale() -> list[str]:
    """The generated files that differ from what the proto generates now."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        return [name for name in FILES
                if not (GEN / name).exists()
                or comparable((GEN / name).read_bytes())
                != comparable((Path(tmp) / name).read_bytes())]


def main() -> int:
    GEN.mkdir(exist_ok=True)
    generate(GEN)
    print("generated", *(str(GEN / f) for f in FILES), sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
