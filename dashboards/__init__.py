"""tollgate's Grafana dashboards as code (grafana-foundation-sdk); `python -m dashboards.build`
writes the JSON to dashboards/json/ and the Helm chart's files/dashboards/."""
