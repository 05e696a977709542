"""Generated protobuf modules (python -m serving._protos.generate)."""
