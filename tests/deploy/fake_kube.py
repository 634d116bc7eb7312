"""A Kubernetes API server just big enough for `helm template --dry-run=server`: discovery
of the kinds the chart renders, plus GETs of the objects given to it. Helm's `lookup`
then sees those objects, as it would during `helm upgrade`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# groupVersion -> [(plural, Kind, namespaced)]
RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("pods", "Pod", True),
        ("namespaces", "Namespace", False),
    ],
    "apps/v1": [("deployments", "Deployment", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "rbac.authorization.k8s.io/v1": [
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
    ],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
}


def _routes(objects: list[Mapping[str, Any]]) -> dict[str, Any]:
    routes: dict[str, Any] = {
        "/version": {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux"},
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    }
    groups = []
    for gv, resources in RESOURCES.items():
        listing = {
            "kind": "APIResourceList",
            "groupVersion": gv,
            "resources": [
                {
                    "name": plural,
                    "singularName": kind.lower(),
                    "namespaced": namespaced,
                    "kind": kind,
                    "verbs": ["get", "list", "create", "patch"],
                }
                for plural, kind, namespaced in resources
            ],
        }
        if gv == "v1":
            routes["/api/v1"] = listing
            continue
        group, version = gv.split("/")
        routes[f"/apis/{gv}"] = listing
        ref = {"groupVersion": gv, "version": version}
        groups.append({"name": group, "versions": [ref], "preferredVersion": ref})
    routes["/apis"] = {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    plurals = {(gv, kind): plural for gv, rs in RESOURCES.items() for plural, kind, _ in rs}
    for obj in objects:
        gv, meta = obj["apiVersion"], obj["metadata"]
        prefix = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        plural = plurals[(gv, obj["kind"])]
        routes[f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"] = obj
    return routes


@contextmanager
def fake_kube(objects: list[Mapping[str, Any]], folder: Path) -> Iterator[Path]:
    """Serve `objects` and yield a kubeconfig that points at them."""
    routes = _routes(objects)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            body = routes.get(self.path.split("?", 1)[0])
            code = 200
            if body is None:
                code = 404
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404}  # fmt: skip
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = folder / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "fake",
                        "cluster": {"server": f"http://127.0.0.1:{server.server_port}"},
                    }
                ],
                "users": [{"name": "fake", "user": {"token": "fake"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    try:
        yield kubeconfig
    finally:
        server.shutdown()
        server.server_close()
