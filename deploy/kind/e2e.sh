#!/usr/bin/env bash
# make kind-e2e: install tollgate into the cluster from `make kind-up` with
# values/kind.yaml, run `helm test`, then tests/deploy/kind_smoke.py through
# port-forwards: completions with the openai SDK, Prometheus targets up and rules
# loaded, and a sample RoutingPolicy changing the routing. Everything it installed
# is removed at the end (KEEP=1 keeps it for a look around).
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${KIND_CLUSTER:-tollgate}
NS=${NAMESPACE:-tollgate}
RELEASE=${RELEASE:-tollgate}
KEEP=${KEEP:-0}
PY=${PY:-.venv/bin/python}
API_PORT=${API_PORT:-18080}
PROM_PORT=${PROM_PORT:-19090}
CHART=deploy/helm/tollgate

for bin in helm kubectl; do
  command -v "$bin" >/dev/null || { echo "kind-e2e: $bin is not on PATH" >&2; exit 1; }
done
kubectl config use-context "kind-$CLUSTER" >/dev/null

work=$(mktemp -d)
forwards=()
cleanup() {
  local status=$?
  for pid in "${forwards[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    echo "kind-e2e: FAILED ($status); state of namespace $NS:" >&2
    kubectl -n "$NS" get pods,svc,endpointslices -o wide >&2 || true
    kubectl -n "$NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 30 >&2 || true
    for deploy in $(kubectl -n "$NS" get deploy -o name 2>/dev/null); do
      echo "--- logs $deploy" >&2
      kubectl -n "$NS" logs "$deploy" --all-containers --tail=40 >&2 || true
    done
  fi
  if [ "$KEEP" != 1 ]; then
    helm uninstall "$RELEASE" --namespace "$NS" --wait --timeout 2m >/dev/null 2>&1 || true
    kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

forward() {  # forward NAMESPACE SERVICE LOCAL:REMOTE: a port-forward in the background
  kubectl -n "$1" port-forward "svc/$2" "$3" >"$work/forward-$2.log" 2>&1 &
  forwards+=("$!")
}

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

# A fresh random key per run: no key is stored anywhere in the repository.
key="sk-tollgate-e2e-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
printf 'e2e: %s\n' "$key" >"$work/api-keys.yaml"
kubectl -n "$NS" create secret generic tollgate-api-keys \
  --from-file=api-keys.yaml="$work/api-keys.yaml" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

kubectl -n "$NS" apply -f deploy/kind/redis.yaml >/dev/null
kubectl -n "$NS" rollout status deploy/tollgate-redis --timeout=180s
kubectl -n "$NS" rollout status deploy/tollgate-budget-redis --timeout=180s

echo "kind-e2e: installing $RELEASE with values/kind.yaml"
helm upgrade --install "$RELEASE" "$CHART" --namespace "$NS" \
  --values "$CHART/values/kind.yaml" --wait --timeout 6m
helm test "$RELEASE" --namespace "$NS" --logs --timeout 3m

orchestrator=$(kubectl -n "$NS" get svc \
  -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=orchestrator" \
  -o jsonpath='{.items[0].metadata.name}')
forward "$NS" "$orchestrator" "$API_PORT:8080"
forward monitoring prometheus-operated "$PROM_PORT:9090"

"$PY" -m tests.deploy.kind_smoke \
  --base-url "http://127.0.0.1:$API_PORT" \
  --api-keys-file "$work/api-keys.yaml" \
  --prometheus "http://127.0.0.1:$PROM_PORT" \
  --namespace "$NS" \
  --release "$RELEASE" \
  --chart "$CHART"
echo "kind-e2e: passed"
