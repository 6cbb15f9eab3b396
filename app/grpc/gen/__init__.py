"""Code generated from app/grpc/rafale.proto by `python -m app.grpc.codegen`: do not edit."""
