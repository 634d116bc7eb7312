"""Cost accounting: usage from an upstream answer, priced, rounded once. Pure.

The number in ``x-tollgate-cost-usd`` and the one added to
``tollgate_llm_cost_usd_total`` are the same float, so sums of either agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollgate.cache.v1 import cache_pb2
from tollgate_common.policy import cost_usd
from tollgate_orchestrator.upstream import Target


def round_cost(usd: float) -> float:
    """12 significant digits: the header and the counter carry the very same number."""
    return float(f"{usd:.12g}")


def format_cost(usd: float) -> str:
    return "0" if usd == 0 else f"{usd:.12g}"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class Usage:
    prompt: int = 0
    completion: int = 0
    cached: int = 0
    reasoning: int = 0

    @classmethod
    def of(cls, usage: object) -> Usage:
        if not isinstance(usage, dict):
            return cls()
        pd = usage.get("prompt_tokens_details")
        cd = usage.get("completion_tokens_details")
        return cls(
            _int(usage.get("prompt_tokens")),
            _int(usage.get("completion_tokens")),
            _int(pd.get("cached_tokens")) if isinstance(pd, dict) else 0,
            _int(cd.get("reasoning_tokens")) if isinstance(cd, dict) else 0,
        )

    def cost(self, target: Target) -> float:
        return round_cost(cost_usd(target.entry, self.prompt, self.completion, self.cached))

    def pb(self) -> cache_pb2.Usage:
        return cache_pb2.Usage(
            prompt_tokens=self.prompt,
            completion_tokens=self.completion,
            cached_prompt_tokens=self.cached,
            reasoning_tokens=self.reasoning,
        )
