"""Cache entries signed by the orchestrators that stored them. Pure.

The tag is HMAC-SHA256, with a key only orchestrators hold, over the entry's cache key
and every field a hit uses (body, model, usage, cost). A hit whose tag does not verify
is a miss: an entry that the cache service (or anyone who reached it) made up or
altered is never answered, even to the tenant whose key it is filed under.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from tollgate.cache.v1 import cache_pb2


def _message(key: str, e: cache_pb2.Entry) -> bytes:
    u = e.usage
    fixed = struct.pack(
        ">qqqqdq",
        u.prompt_tokens,
        u.completion_tokens,
        u.cached_prompt_tokens,
        u.reasoning_tokens,
        e.cost_usd,
        e.created_unix,
    )
    model = e.model.encode()
    head = b"tollgate-cache-v1\0" + key.encode() + b"\0" + struct.pack(">I", len(model))
    return head + model + fixed + e.body


class Signer:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the cache signing key must be at least 32 bytes")
        self._secret = secret

    def sign(self, key: str, entry: cache_pb2.Entry) -> None:
        entry.tag = hmac.new(self._secret, _message(key, entry), hashlib.sha256).digest()

    def verify(self, key: str, entry: cache_pb2.Entry) -> bool:
        want = hmac.new(self._secret, _message(key, entry), hashlib.sha256).digest()
        return hmac.compare_digest(want, entry.tag)
