"""The prompt/response cache service: exact keys, TTL, LRU by bytes, memory or Redis."""
