"""Generated protobuf and gRPC modules (scripts/gen_proto.py from proto/). Do not edit."""
