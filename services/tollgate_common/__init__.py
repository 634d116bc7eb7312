"""Shared building blocks of the tollgate services: config, logging, the service bootstrap
and shutdown, gRPC, metrics, the circuit breaker, Redis, budgets and the routing policy."""

__version__ = "0.1.0"
