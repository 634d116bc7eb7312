"""gRPC helpers: the server bootstrap, channels with deadlines, per-method metrics."""
