"""Shared building blocks of the tollgate services: config, logging, gRPC and metrics."""

__version__ = "0.1.0"
