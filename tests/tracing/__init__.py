"""End-to-end traces (issue #16) against a real trace backend, Arize Phoenix, run inside a
private network namespace: see backend.py."""
