"""The router's metric families (from the catalog), with label children bound once."""

from __future__ import annotations

import re

from tollgate_common.metrics import Children, Families, Shown
from tollgate_common.policy import INTENTS, TIERS
from tollgate_router.policy_store import PolicyState
from tollgate_router.routing import FALLBACK_REASONS, Decision

RELOAD_TRIGGERS = ("startup", "file", "rpc")
# ``tollgate_router_policy_info`` labels come from a pushed document: bounded in length
# and alphabet (L-11), so a policy cannot blow up a scrape or a TSDB index.
MAX_VERSION_LABEL_CHARS = 64
MAX_SOURCE_LABEL_CHARS = 160
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._:/@+=-]")


def info_label(value: str, limit: int = MAX_VERSION_LABEL_CHARS) -> str:
    """``value`` as a label: unsafe characters become ``_``, at most ``limit`` characters."""
    return _LABEL_UNSAFE.sub("_", value[:limit])


def info_labels(state: PolicyState) -> tuple[str, str]:
    return info_label(state.version), info_label(state.source, MAX_SOURCE_LABEL_CHARS)


RELOAD_RESULTS = ("success", "unchanged", "failure")


class RouterMetrics:
    """Records decisions and policy changes; also the policy store's listener."""

    def __init__(self, families: Families) -> None:
        self.families = families
        # Keyed by (intent, tier, model): every value comes from the policy, so bounded.
        self._selections = Children(families.counter("tollgate_router_model_selections_total"))
        self.decision_seconds = families.histogram("tollgate_router_decision_duration_seconds")
        self._fallbacks = Children(
            families.counter("tollgate_router_fallbacks_total"),
            bind=[(r,) for r in FALLBACK_REASONS],
        )
        self._chain_length = families.histogram("tollgate_router_chain_length")
        self._info = Children(families.gauge("tollgate_router_policy_info"))
        # (provider, as_of) per loaded table: checked when loaded, at most MAX_TABLES.
        self._price_tables = Shown(families.gauge("tollgate_price_table_info"))
        self._reloads = Children(
            families.counter("tollgate_router_policy_reloads_total"),
            bind=[(t, r) for t in RELOAD_TRIGGERS for r in RELOAD_RESULTS],
        )
        self._last_reload = families.gauge("tollgate_router_policy_last_reload_timestamp_seconds")
        self._confidence = Children(
            families.histogram("tollgate_router_classifier_confidence"),
            bind=[(i,) for i in INTENTS],
        )
        self._complexity = families.histogram("tollgate_router_complexity_score")
        self._cost = Children(
            families.histogram("tollgate_router_estimated_cost_usd"), bind=[(t,) for t in TIERS]
        )

    def decided(self, d: Decision, seconds: float) -> None:
        self.decision_seconds.observe(seconds)
        self._selections(d.intent, d.tier, d.chain[0]).inc()
        for reason in d.fallbacks:
            self._fallbacks(reason).inc()
        self._chain_length.observe(len(d.chain))
        self._confidence(d.intent).observe(d.confidence)
        self._complexity.observe(d.complexity)
        self._cost(d.tier).observe(d.estimated_cost_usd)

    # StoreListener
    def reloaded(self, trigger: str, result: str) -> None:
        self._reloads(trigger, result).inc()

    def changed(self, old: PolicyState | None, new: PolicyState) -> None:
        # Exactly one series: the old labels go before the new ones appear.
        labels = info_labels(new)
        if old is not None:
            was = info_labels(old)
            if was != labels:
                self._info.remove(*was)
        self._info(*labels).set(1)
        self._last_reload.set(new.loaded_at)
        self._price_tables.show(new.policy.price_tables)
