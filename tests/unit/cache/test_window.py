"""The rolling hit-rate window of the cache service."""

from __future__ import annotations

import pytest

from tollgate_cache.window import HitRateWindow


def test_hit_rate_is_zero_before_any_lookup() -> None:
    assert HitRateWindow(10).rate() == 0.0


def test_hit_rate_covers_only_the_last_n_lookups() -> None:
    w = HitRateWindow(4)
    for hit in (True, True, True, True):
        w.record(hit)
    assert w.rate() == 1.0
    w.record(False)
    w.record(False)
    assert w.rate() == 0.5  # the window is now T T F F
    for _ in range(4):
        w.record(False)
    assert w.rate() == 0.0
    assert w.count == 4


def test_partial_window_uses_the_lookups_seen() -> None:
    w = HitRateWindow(1000)
    w.record(True)
    w.record(False)
    w.record(False)
    assert w.rate() == pytest.approx(1 / 3)


def test_window_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="hit_rate_window"):
        HitRateWindow(0)
