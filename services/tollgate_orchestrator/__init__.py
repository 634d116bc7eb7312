"""The orchestrator: tollgate's OpenAI-compatible front door and its gRPC face.

Request path: auth -> budget reserve -> router Route -> cache Lookup -> upstream
(retries, fallbacks, circuit breakers) -> cost -> budget settle -> cache Store.
"""
