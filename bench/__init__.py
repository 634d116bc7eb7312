"""Benchmarks: `make bench` (bench.run) and `make bench-metrics` (bench.metrics_cost)."""
