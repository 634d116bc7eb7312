#!/usr/bin/env bash
# make kind-up: a kind cluster with kube-prometheus-stack, and the tollgate image
# built and loaded onto its nodes. Safe to run again: an existing cluster is reused.
# Needs docker, kind, helm and kubectl on PATH (`make tools` provides helm and kubectl).
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${KIND_CLUSTER:-tollgate}
IMAGE=${IMAGE:-tollgate:dev}
KPS_VERSION=${KPS_VERSION:-69.2.3}

for bin in docker kind helm kubectl; do
  command -v "$bin" >/dev/null || { echo "kind-up: $bin is not on PATH" >&2; exit 1; }
done

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "kind-up: reusing cluster $CLUSTER"
else
  kind create cluster --name "$CLUSTER" --config deploy/kind/cluster.yaml --wait 180s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

echo "kind-up: installing kube-prometheus-stack $KPS_VERSION as release kps in namespace monitoring"
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update >/dev/null
helm upgrade --install kps prometheus-community/kube-prometheus-stack \
  --version "$KPS_VERSION" --namespace monitoring --create-namespace \
  --values deploy/kind/kps-values.yaml --wait --timeout 10m

echo "kind-up: building $IMAGE"
make --no-print-directory image IMAGE="$IMAGE"
kind load docker-image "$IMAGE" --name "$CLUSTER"
echo "kind-up: cluster $CLUSTER is ready; next: make kind-e2e"
