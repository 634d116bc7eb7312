"""Local Prometheus and Alertmanager for `make observe` and the monitoring tests."""
