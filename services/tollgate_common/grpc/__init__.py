"""gRPC helpers: the server bootstrap, channels with deadlines, metric interceptors."""
