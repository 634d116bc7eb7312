"""Provider adapters: one per upstream API family, behind one protocol.

``openai`` speaks OpenAI's own wire formats to OpenAI and to any compatible server.
An adapter sends an ``LlmRequest`` in a wire format it serves (``APIS``) and hands
back the raw answer with its usage, or a stream; every failure is an
``AttemptFailed`` the attempt loop decides on.
"""

from __future__ import annotations

from typing import Protocol

from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.types import LlmRequest, Target, UpstreamStream


class Upstream(Protocol):
    async def complete(
        self, target: Target, req: LlmRequest, budget: float
    ) -> tuple[bytes, Usage]: ...

    async def stream(self, target: Target, req: LlmRequest, budget: float) -> UpstreamStream: ...
