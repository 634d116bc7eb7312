"""The rolling hit rate over the last N lookups: a ring buffer with a running sum, O(1)."""

from __future__ import annotations


class HitRateWindow:
    __slots__ = ("_hits", "_n", "_pos", "_ring", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("hit_rate_window must be at least 1")
        self.size = size
        self._ring = bytearray(size)
        self._pos = 0
        self._n = 0
        self._hits = 0

    def record(self, hit: bool) -> None:
        old = self._ring[self._pos]
        new = 1 if hit else 0
        self._ring[self._pos] = new
        self._pos = (self._pos + 1) % self.size
        if self._n < self.size:
            self._n += 1
        self._hits += new - old

    def rate(self) -> float:
        """Hits / lookups in the window; 0.0 before the first lookup."""
        return self._hits / self._n if self._n else 0.0

    @property
    def count(self) -> int:
        return self._n
