"""The gRPC front door (rafale.v1.Rafale): the only package that imports grpc."""
