"""The env and files the chart renders are what the services accept: each container of
the rendered Deployments is started as a real process with exactly that env, its
ConfigMaps and Secrets written where the pod would mount them (rewritten into a temp
folder), listeners moved to free loopback ports. Its own probes must then pass, and a
completion must go through with the key from the mounted keys file.

The operator is left out: it needs a Kubernetes API (its own tests use kmock)."""

from __future__ import annotations

import base64
import gzip
import re
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.chart import Manifest, by_name, component, of_kind, render
from tools.stack import Proc, base_env, free_port, spawn, wait_grpc, wait_http

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ORDER = ("simulator", "router", "cache", "orchestrator")
KEY = "sk-tollgate-chart-env-test-0123456789abcdef"
POD_NAME = "tollgate"  # what a fieldRef gives here (metadata.name, metadata.namespace)


def _mounts(
    spec: dict[str, Any], container: dict[str, Any], docs: list[Manifest], tmp: Path
) -> dict[str, Path]:
    """mountPath -> a temp folder holding what the volume would hold."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    out = {}
    for m in container["volumeMounts"]:
        vol = volumes[m["name"]]
        folder = tmp / m["name"]
        folder.mkdir(exist_ok=True)
        if "configMap" in vol:
            name = vol["configMap"]["name"]
            cms = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == name]
            assert cms or vol["configMap"].get("optional"), f"ConfigMap {name} is not rendered"
            for cm in cms:
                for key, text in cm["data"].items():
                    (folder / key).write_text(text)
        elif "secret" in vol:
            name = vol["secret"]["secretName"]
            rendered = [s for s in of_kind(docs, "Secret") if s["metadata"]["name"] == name]
            if rendered:  # the chart's own (the gRPC tokens and their digests)
                data = rendered[0]["data"]
                for item in vol["secret"]["items"]:
                    (folder / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
            else:  # a Secret the user creates: only the API keys
                assert m["name"] == "api-keys", f"unexpected Secret volume {m['name']}"
                (folder / "api-keys.yaml").write_text(f"e2e: {KEY}\n")
        out[m["mountPath"]] = folder
    return out


def _env(
    container: dict[str, Any], mounts: dict[str, Path], ports: dict[str, int], addrs: dict[str, str]
) -> dict[str, str]:
    """The container's env, with mount paths, listeners and peer addresses made local."""
    by_number = {str(p["containerPort"]): ports[p["name"]] for p in container["ports"]}
    env: dict[str, str] = {}
    for e in container["env"]:
        name, value = e["name"], e.get("value")
        if value is None:
            assert "fieldRef" in e["valueFrom"], f"{name}: only fieldRef is expected here"
            value = POD_NAME
        # The kubelet expands $(VAR) from the variables defined before it.
        value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)
        for mount, folder in mounts.items():
            if value.startswith(mount + "/"):
                value = str(folder) + value[len(mount) :]
        if name.endswith("_HOST"):
            value = "127.0.0.1"
        elif name.endswith("_PORT") and value in by_number:
            value = str(by_number[value])
        env[name] = addrs.get(name, value)
    return env


def _wait_ready(proc: Proc, container: dict[str, Any], ports: dict[str, int]) -> None:
    probe = container["readinessProbe"]
    if "grpc" in probe:
        wait_grpc(ports["grpc"], proc, timeout=60)
    else:
        port = ports[probe["httpGet"]["port"]]
        wait_http(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", proc, timeout=60)
        live = container["livenessProbe"]["httpGet"]
        url = f"http://127.0.0.1:{ports[live['port']]}{live['path']}"
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.status == 200


def _control_plane_takes_only_the_rendered_tokens(docs: list[Manifest], router_port: int) -> None:
    """The router started from the rendered env refuses a control RPC without a caller
    token or with a made-up one, and answers the operator's token from the rendered Secret."""
    import grpc

    from tollgate.router.v1 import router_pb2, router_pb2_grpc

    secret = by_name(docs, "Secret", "-grpc-tokens")
    token = base64.b64decode(secret["data"]["operator"]).decode()
    with grpc.insecure_channel(f"127.0.0.1:{router_port}") as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        for metadata in ((), (("x-tollgate-caller-token", "x" * 48),)):
            with pytest.raises(grpc.RpcError) as err:
                stub.GetPolicy(router_pb2.GetPolicyRequest(), metadata=metadata, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        answer = stub.GetPolicy(
            router_pb2.GetPolicyRequest(),
            metadata=(("x-tollgate-caller-token", token),),
            timeout=5,
        )
        assert answer.ListFields()


class _OtlpSink:
    """An OTLP/HTTP receiver on loopback: keeps every ExportTraceServiceRequest it gets."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb

        self.requests: list[Any] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                req = pb.ExportTraceServiceRequest()
                req.ParseFromString(body)
                sink.requests.append(req)
                out = pb.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def resources(self) -> Iterator[tuple[dict[str, str], int]]:
        """(resource attributes, number of spans) of every batch received."""
        for req in self.requests:
            for rs in req.resource_spans:
                attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                yield attrs, sum(len(ss.spans) for ss in rs.scope_spans)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("variant", ["memory", "redis", "tracing"])
def test_rendered_env_starts_every_service(
    variant: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sets = ["services.simulator.enabled=true", "services.simulator.latencyScale=0"]
    if variant == "redis":  # the cache and the budgets on a real redis-server
        redis = request.getfixturevalue("redis_server")
        sets += ["services.cache.backend=redis", f"redis.url={redis.url}"]
    sink = None
    if variant == "tracing":  # every span kept, sent over OTLP/HTTP to a loopback sink
        sink = _OtlpSink()
        request.addfinalizer(sink.close)
        sets += [
            "tracing.enabled=true",
            f"tracing.endpoint={sink.url}",
            "tracing.protocol=http/protobuf",
            "tracing.sampler=always_on",
        ]
    docs = render(sets=sets)
    procs: list[Proc] = []
    ports: dict[str, dict[str, int]] = {}
    try:
        for comp in ORDER:
            dep = by_name(docs, "Deployment", f"-{comp}")
            assert component(dep) == comp
            spec = dep["spec"]["template"]["spec"]
            container = spec["containers"][0]
            own = {p["name"]: free_port() for p in container["ports"]}
            ports[comp] = own
            folder = tmp_path / comp
            folder.mkdir()
            mounts = _mounts(spec, container, docs, folder)
            addrs = {}
            if comp == "orchestrator":
                addrs = {
                    "TOLLGATE_ORCHESTRATOR_ROUTER_ADDR": f"127.0.0.1:{ports['router']['grpc']}",
                    "TOLLGATE_ORCHESTRATOR_CACHE_ADDR": f"127.0.0.1:{ports['cache']['grpc']}",
                    "TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL": (
                        f"http://127.0.0.1:{ports['simulator']['http']}/v1"
                    ),
                }
            env = base_env(_env(container, mounts, own, addrs))
            assert container["command"][:2] == ["python", "-m"]
            args = [sys.executable, "-m", container["command"][2]]
            proc = spawn(comp, args, env, tmp_path / "logs")
            procs.append(proc)
            _wait_ready(proc, container, own)

        import openai

        base_url = f"http://127.0.0.1:{ports['orchestrator']['http']}/v1"
        client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Say hello."}]
        )
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-tollgate-model"]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).models.list()
        _control_plane_takes_only_the_rendered_tokens(docs, ports["router"]["grpc"])
        if sink is not None:
            for p in reversed(procs):  # a clean stop exports what is queued
                p.stop()
            _traces_came_from_every_service(sink)
    finally:
        for p in reversed(procs):
            p.stop()


def _traces_came_from_every_service(sink: _OtlpSink) -> None:
    """The services read the chart's OTEL_* env: spans reach the chart's endpoint over its
    protocol, each service's under its own name with the chart's Kubernetes resource
    attributes. Which services a request crosses, and their spans, is tests/tracing's."""
    spans: dict[str, int] = {}
    for attrs, n in sink.resources():
        name = attrs.get("service.name", "")
        spans[name] = spans.get(name, 0) + n
        assert attrs["k8s.namespace.name"] == "tollgate", attrs
        assert attrs["k8s.pod.name"] == POD_NAME, attrs  # $(...) of the downward API
        assert attrs["k8s.deployment.name"] == name.replace("tollgate-", "tg-tollgate-"), attrs
    assert set(spans) <= {f"tollgate-{c}" for c in ORDER}, spans
    assert spans.get("tollgate-orchestrator", 0) > 0, spans  # where every request starts
    assert len(spans) >= 2, f"no spans from the control plane behind it: {spans}"
