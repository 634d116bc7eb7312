"""API keys: held as sha256 digests, the tenant found from the key, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from tollgate_orchestrator.errors import ApiError

_DUMMY = hashlib.sha256(b"tollgate: no such key").digest()


def unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        message,
        code="invalid_api_key",
        headers={"x-should-retry": "false"},
        reason="auth",
    )


class KeyRing:
    def __init__(self, digests: dict[bytes, str]) -> None:
        self._digests = dict(digests)

    @property
    def tenants(self) -> set[str]:
        return set(self._digests.values())

    def tenant_for(self, authorization: str | None) -> str:
        """The tenant of ``Authorization: Bearer <key>``; raises 401 otherwise.

        The lookup is by digest, so no key byte is compared with ``==``; the final
        check is ``hmac.compare_digest``. Missing and wrong keys get the same answer.
        """
        if not authorization:
            raise unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
            )
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise unauthorized("Expected 'Authorization: Bearer <key>'.")
        d = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        tenant = self._digests.get(d)
        stored = d if tenant is not None else _DUMMY
        if tenant is None or not hmac.compare_digest(stored, d):
            raise unauthorized("Incorrect API key provided.")
        return tenant
