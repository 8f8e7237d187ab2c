"""gRPC edges: servicers translate proto -> domain call -> proto; nothing below them imports *_pb2."""
