#!/usr/bin/env bash
# Installs the Debian packages tollgate's tests run for real: redis-server,
# prometheus (with promtool), prometheus-alertmanager, and wrk (make bench). As root it installs
# what is missing; otherwise it says what to install. Then tools/podman-setup.sh: podman and
# its helpers for `make image`/`make image-test` where there is no Docker engine.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v wrk >/dev/null || need+=(wrk)  # the load generator of make bench
[ ${#need[@]} -eq 0 ] && exec bash "$(dirname "$0")/podman-setup.sh"
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "installing ${need[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packages start system services; tests start their own on free ports.
for svc in redis-server prometheus prometheus-alertmanager prometheus-node-exporter; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || service "$svc" stop >/dev/null 2>&1 || true
done
exec bash "$(dirname "$0")/podman-setup.sh"
