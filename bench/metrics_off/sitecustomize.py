"""Turns tollgate's instrumentation off in a process, for `make bench-metrics` only.

This directory goes first on PYTHONPATH of the "metrics off" stack, so Python
imports this module at start-up. It makes every prometheus_client update and label
lookup a no-op, leaves gRPC handlers and channels unwrapped (no per-RPC metric code;
channels keep their default deadline), and builds any grpc.aio server or channel
without interceptors. What stays is tollgate's own bookkeeping around the calls
(label bounding, timestamps in the HTTP middleware and the engine), so the measured
difference slightly underestimates the whole instrumentation cost.
"""

from __future__ import annotations

from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase


def _noop(self: object, *args: Any, **kwargs: Any) -> None:
    return None


class _NoopChild:
    """What ``.labels()`` returns: every operation a child supports, doing nothing."""

    def __getattr__(self, name: str) -> Any:
        return _noop_fn


def _noop_fn(*args: Any, **kwargs: Any) -> None:
    return None


_CHILD = _NoopChild()


def _labels(self: MetricWrapperBase, *args: Any, **kwargs: Any) -> Any:
    return _CHILD


Counter.inc = _noop  # type: ignore[method-assign]
Gauge.inc = _noop  # type: ignore[method-assign]
Gauge.dec = _noop  # type: ignore[method-assign]
Gauge.set = _noop  # type: ignore[method-assign]
Histogram.observe = _noop  # type: ignore[method-assign]
MetricWrapperBase.labels = _labels  # type: ignore[method-assign]

_server = grpc.aio.server


def _server_without_interceptors(*args: Any, **kwargs: Any) -> Any:
    kwargs.pop("interceptors", None)
    return _server(*args, **kwargs)


grpc.aio.server = _server_without_interceptors

_insecure = grpc.aio.insecure_channel
_secure = grpc.aio.secure_channel


def _insecure_channel(*args: Any, **kwargs: Any) -> Any:
    kwargs.pop("interceptors", None)
    return _insecure(*args, **kwargs)


def _secure_channel(*args: Any, **kwargs: Any) -> Any:
    kwargs.pop("interceptors", None)
    return _secure(*args, **kwargs)


grpc.aio.insecure_channel = _insecure_channel
grpc.aio.secure_channel = _secure_channel


try:
    from tollgate_common.grpc import channel as _channel
    from tollgate_common.grpc import metrics as _grpc_metrics
except ImportError:  # not a tollgate process
    pass
else:
    _channel_init = _channel.MeteredChannel.__init__

    def _unmetered_channel(
        self: Any, channel: Any, families: Any, timeout: float, metadata: Any = ()
    ) -> None:
        _channel_init(self, channel, None, timeout, metadata)

    def _unwrapped(self: Any, method: str, handler: Any) -> Any:
        return handler

    _channel.MeteredChannel.__init__ = _unmetered_channel  # type: ignore[method-assign]
    _grpc_metrics.ServerMetrics.wrap = _unwrapped  # type: ignore[method-assign]
