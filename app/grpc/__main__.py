"""`python -m app.grpc`: the gRPC front door (role `grpc` in entrypoint.sh)."""

import sys

from app.grpc.server import main

if __name__ == "__main__":
    sys.exit(main())
