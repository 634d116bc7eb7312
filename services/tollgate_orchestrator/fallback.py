"""The attempt loop: retries on one model, then fallbacks along the chain, under one deadline.

Each model gets up to ``retry_max_attempts`` tries (429, 5xx, timeouts and
connection errors retry with backoff or the upstream's Retry-After), then the next
model; an open circuit skips a model at once; a client error (400, 413, 422) ends
the loop and passes through. Retries in flight are bounded by the retry budget, and
every attempt and wait spends from the request's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from opentelemetry.trace import Span, use_span

from tollgate_common import tracing
from tollgate_common.breaker import OPEN, STATE_NAMES, BreakerConfig, CircuitBreaker
from tollgate_orchestrator import spans
from tollgate_orchestrator.accounting import Call
from tollgate_orchestrator.config import OrchestratorSettings
from tollgate_orchestrator.metrics import OrchestratorMetrics
from tollgate_orchestrator.retry import (
    CIRCUIT_OPEN,
    CLIENT,
    UNSUPPORTED,
    AttemptFailed,
    Failure,
    RetryBudget,
    RetryPolicy,
)
from tollgate_orchestrator.types import Target

log = logging.getLogger(__name__)

T = TypeVar("T")


class Exhausted(Exception):
    """No model of the chain served; ``failure`` is the last one (None: every circuit open)."""

    def __init__(self, target: Target, failure: Failure | None) -> None:
        super().__init__(failure.error_class if failure else CIRCUIT_OPEN)
        self.target = target
        self.failure = failure

    @property
    def error_class(self) -> str:
        return self.failure.error_class if self.failure is not None else CIRCUIT_OPEN


class Refused(Exception):
    """The upstream refused the request itself (a client error): it goes back as sent."""

    def __init__(self, target: Target, failure: Failure) -> None:
        super().__init__(failure.error_class)
        self.target = target
        self.failure = failure


class Attempts:
    def __init__(
        self,
        settings: OrchestratorSettings,
        metrics: OrchestratorMetrics,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.perf_counter,
        provider_type: Callable[[str], str] = lambda provider: provider,
    ) -> None:
        s = self.settings = settings
        self.metrics = metrics
        self.provider_type = provider_type  # for the spans' gen_ai.provider.name
        self._rand = rand
        self._clock = clock
        self.policy = RetryPolicy(
            max_attempts_per_model=s.retry_max_attempts,
            total_attempts=s.retry_total_attempts,
            base_backoff=s.retry_base_backoff_seconds,
            max_backoff=s.retry_max_backoff_seconds,
            retry_after_cap=s.retry_after_cap_seconds,
        )
        self.budget = RetryBudget(s.retry_budget_ratio, s.retry_budget_min)
        self.breaker_config = BreakerConfig(
            consecutive_failures=s.breaker_consecutive_failures,
            failure_ratio=s.breaker_failure_ratio,
            window_seconds=s.breaker_window_seconds,
            min_requests=s.breaker_min_requests,
            cooldown_seconds=s.breaker_cooldown_seconds,
        )
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def breaker(self, target: Target) -> CircuitBreaker:
        key = (target.provider, target.name)
        b = self._breakers.get(key)
        if b is None:
            m = self.metrics

            def changed(old: int, new: int) -> None:
                m.breaker_changed(target.provider, target.name, new, new == OPEN)
                log.warning("circuit %s", STATE_NAMES[new], extra={"model": m.model(target.name)})

            b = self._breakers[key] = CircuitBreaker(self.breaker_config, on_change=changed)
        return b

    def _observe(self, target: Target, seconds: float, span: Span | None) -> None:
        m = self.metrics
        m.upstream_duration(m.provider(target.provider), m.model(target.name)).observe(
            seconds, tracing.exemplar(span)
        )

    def _span(
        self, call: Call, target: Target, number: int, on_model: int, last: Failure | None
    ) -> Span | None:
        if not tracing.on or tracing.unsampled() is not None:
            return None
        reason = last.error_class if last is not None else CIRCUIT_OPEN
        retry = reason if on_model > 1 else None
        fallback = reason if on_model == 1 and target is not call.route.chain[0] else None
        kind = self.provider_type(target.provider)
        return spans.start_attempt(call, target, kind, number, retry, fallback)

    async def run(
        self,
        call: Call,
        attempt: Callable[[Target, float], Awaitable[T]],
        observe_success: bool = True,
    ) -> tuple[Target, T, float]:
        """(the model that answered, its result, when its attempt started).

        ``attempt(target, seconds)`` makes one try within ``seconds`` and raises
        ``AttemptFailed``. Raises ``Exhausted`` or ``Refused``. With tracing on, each try
        has its span; the one that answered is left open on ``call.span`` for whoever
        accounts the answer to end.
        """
        chain, m, policy = call.route.chain, self.metrics, self.policy
        deadline = call.started + self.settings.request_deadline_seconds
        total = 0
        last: Failure | None = None
        last_target = chain[0]
        refusal: tuple[Target, Failure] | None = None  # the first model that cannot carry it
        for i, target in enumerate(chain):
            if i > 0:
                m.fallback(
                    chain[i - 1].name, target.name, last.error_class if last else CIRCUIT_OPEN
                )
            breaker = self.breaker(target)
            on_model = 0
            while total < policy.total_attempts:
                if not breaker.allow():
                    if on_model == 0:
                        m.upstream_error(target.provider, target.name, CIRCUIT_OPEN)
                        last, last_target = Failure(CIRCUIT_OPEN), target
                    break
                remaining = deadline - self._clock()
                if remaining <= 0:
                    breaker.release()
                    raise Exhausted(last_target, Failure("deadline"))
                on_model += 1
                total += 1
                retrying = on_model > 1
                if retrying:
                    self.budget.retries += 1
                span = self._span(call, target, total, on_model, last)
                t0 = self._clock()
                try:
                    seconds = min(remaining, self.settings.upstream_timeout_seconds)
                    if span is None:
                        result = await attempt(target, seconds)
                    else:
                        with use_span(span, False, False, False):  # no stack traces on spans
                            result = await attempt(target, seconds)
                except AttemptFailed as exc:
                    f = exc.failure
                    elapsed = self._clock() - t0
                    call.upstream_seconds += elapsed
                    self._observe(target, elapsed, span)
                    if span is not None:
                        spans.attempt_failed(span, f.error_class, f.status)
                    m.upstream_error(target.provider, target.name, f.error_class)
                    if f.counts_against_breaker:
                        breaker.record_failure()
                    else:
                        breaker.release()
                    last, last_target = f, target
                    if f.error_class == CLIENT:
                        raise Refused(target, f) from None
                    if f.error_class == UNSUPPORTED:
                        refusal = refusal or (target, f)
                        break
                    delay = policy.retry_delay(
                        f, on_model, total, deadline - self._clock(), self._rand
                    )
                    if delay is None or not self.budget.allows():
                        break
                    m.retry(target.provider, target.name, f.error_class)
                    await asyncio.sleep(delay)
                    call.wait_seconds += delay
                    continue
                except BaseException as exc:
                    breaker.release()
                    if span is not None:
                        spans.attempt_failed(span, type(exc).__name__)
                    raise
                finally:
                    if retrying:
                        self.budget.retries -= 1
                breaker.record_success()
                elapsed = self._clock() - t0
                call.upstream_seconds += elapsed
                if observe_success:
                    self._observe(target, elapsed, span)
                call.span = span
                return target, result, t0
            if total >= policy.total_attempts:
                break
        if refusal is not None and last is not None and last.error_class == UNSUPPORTED:
            raise Refused(*refusal)  # no model could carry it: the request's own fault
        raise Exhausted(last_target, last)
