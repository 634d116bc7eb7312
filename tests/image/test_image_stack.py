"""The image, built and run for real (issue #17): `make image` (tools/image.sh, podman here,
docker where an engine runs), then the chart as `helm template` renders it with
values/kind.yaml (the kind flow's values) run as containers of one pod: simulator, router,
cache, orchestrator, each with exactly its rendered command, env, user, read-only root,
tmpfs and probes (tests/image/pod.py), and the cache's and the budgets' Redis from
deploy/kind/redis.yaml in pods of their own.

The test is the node: it reaches the pod through ports published on 127.0.0.1 only, runs
every probe the way the kubelet does, sends requests with the openai SDK (a miss, the same
request answered from the cache, a stream, a budget rejection), scrapes every
ServiceMonitor endpoint, and finally sends SIGTERM to the orchestrator under load.

Where neither podman nor docker works it is skipped, and fails in CI (chart.missing).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.chart import KIND_VALUES, ROOT, Manifest, by_name, of_kind, render
from tests.image import pod as podlib
from tests.image.pod import Container, Pod

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

IMAGE = os.environ.get("IMAGE", "tollgate:dev")
NAMESPACE = "tollgate"
KEY = "sk-tollgate-image-test-0123456789abcdef"
BROKE = "sk-tollgate-image-test-broke-0123456789"
TINY = 0.000001  # one request spends it
ORDER = ("simulator", "router", "cache", "orchestrator")
PROMPT = "Write a Python function that reverses a linked list."


def values(tmp: Path) -> Path:
    """On top of values/kind.yaml: one replica each (one container per component) and a
    tiny budget for one tenant, in the chart's config."""
    extra = {
        "services": {"router": {"replicas": 1}, "orchestrator": {"replicas": 1}},
        "config": {
            "orchestrator": {
                "budgets": [
                    {"tenant": "broke", "period": "day", "limit_usd": TINY, "action": "reject"}
                ]
            }
        },
    }
    path = tmp / "image-test-values.yaml"
    path.write_text(yaml.safe_dump(extra))
    return path


@dataclass
class Stack:
    eng: list[str]
    docs: list[Manifest]
    pod: Pod
    started: dict[str, list[str]]  # component -> the probes that passed at start

    def c(self, name: str) -> Container:
        return self.pod.containers[name]

    @property
    def base_url(self) -> str:
        return self.pod.url(self.c("orchestrator"), "http")


def start_stack(
    eng: list[str],
    tmp: Path,
    sets: tuple[str, ...] = (),
    only: tuple[str, ...] = ORDER,
    prefix: str = podlib.POD_PREFIX,
) -> tuple[list[Pod], Stack]:
    """Render, then run Redis (deploy/kind/redis.yaml) and the chart's containers."""
    docs = render([KIND_VALUES, values(tmp)], sets=sets)
    chart_image = by_name(docs, "Deployment", "-orchestrator")["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    images = {chart_image: IMAGE, "redis:7.4-alpine": podlib.redis_image(eng)}
    made: list[Pod] = []
    hosts: dict[str, str] = {}
    # The kind flow's Redis, each in its own pod (both listen on 6379), found by Service name.
    redis_docs = [d for d in yaml.safe_load_all((ROOT / "deploy/kind/redis.yaml").read_text()) if d]
    for dep in of_kind(redis_docs, "Deployment"):
        name = dep["metadata"]["name"]
        c = podlib.container(dep, redis_docs, tmp, images, {}, NAMESPACE, name)
        p = Pod(eng, f"{prefix}-{name}", list(c.ports.values()), {})
        made.append(p)
        p.start(c)
        p.wait_started(c)
        hosts[name] = p.ip()
    # The chart's pod: every Service of the release answers on the pod's own loopback.
    for svc in of_kind(docs, "Service"):
        hosts[svc["metadata"]["name"]] = "127.0.0.1"
    secrets = {"tollgate-api-keys": {"api-keys.yaml": f"e2e: {KEY}\nbroke: {BROKE}\n"}}
    containers = [
        podlib.container(
            by_name(docs, "Deployment", f"-{comp}"), docs, tmp, images, secrets, NAMESPACE, comp
        )
        for comp in only
    ]
    ports = sorted({p for c in containers for p in c.ports.values()})
    pod = Pod(eng, prefix, ports, hosts)
    made.append(pod)
    started = {}
    try:
        for c in containers:
            pod.start(c)
            started[c.name] = pod.wait_started(c)
    except BaseException:
        for p in reversed(made):
            p.remove()
        raise
    return made, Stack(eng, docs, pod, started)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    eng = podlib.engine()
    t0 = time.monotonic()
    podlib.build(IMAGE)
    print(f"image {IMAGE} built (or found in the layer cache) in {time.monotonic() - t0:.0f} s")
    with podlib.pods(eng) as made:
        pods, s = start_stack(eng, tmp_path_factory.mktemp("image-stack"))
        made += pods
        yield s


# --- the image itself -----------------------------------------------------------------------


def test_image_is_clean_and_labelled(stack: Stack) -> None:
    fmt = "{{json .Config.Labels}}|{{json .Config.Healthcheck}}|{{.Config.User}}"
    labels_json, health, user = (
        podlib.run(stack.eng, "image", "inspect", IMAGE, "--format", fmt).strip().split("|")
    )
    labels = yaml.safe_load(labels_json)
    version = (
        (ROOT / "services/tollgate_common/__init__.py").read_text().split('__version__ = "')[1]
    )
    assert labels["org.opencontainers.image.version"] == version.split('"')[0]
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert labels["org.opencontainers.image.revision"].startswith(commit or "unknown")
    assert labels["org.opencontainers.image.source"]
    assert health in ("null", ""), f"HEALTHCHECK in the image: {health}"  # probes do it
    assert user == "10001:10001"
    script = (
        "import shutil, pathlib, importlib.util as u; "
        "print([c for c in ('gcc','cc','g++','make') if shutil.which(c)]); "
        "print([str(p) for p in pathlib.Path('/').glob('[!p]*/**/.cache') if p.is_dir()]); "
        "print([m for m in ('pip', 'setuptools') if u.find_spec(m)]); "
        "print(sum(1 for p in pathlib.Path('/app').rglob('*.py') "
        "if not list(p.parent.glob('__pycache__/' + p.stem + '.cpython-*.pyc'))))"
    )
    out = podlib.run(
        stack.eng,
        "run",
        "--rm",
        "--network=none",
        "--read-only",
        "--read-only-tmpfs=false" if stack.eng[0] == "podman" else "--read-only",
        "--entrypoint",
        "python",
        IMAGE,
        "-c",
        script,
    ).splitlines()
    assert out == ["[]", "[]", "[]", "0"], f"compilers, pip caches, installers, uncompiled: {out}"
    sbom = yaml.safe_load((ROOT / ".image/sbom.json").read_text())
    names = {p["name"].lower() for p in sbom["packages"]}
    assert {"fastapi", "grpcio", "redis", "kopf"} <= names, names


# --- the stack ------------------------------------------------------------------------------


def test_every_container_started_as_rendered(stack: Stack) -> None:
    for comp in ORDER:
        c = stack.c(comp)
        rendered = by_name(stack.docs, "Deployment", f"-{comp}")["spec"]["template"]["spec"]
        spec = rendered["containers"][0]
        # PID 1 is the rendered command, under the rendered user, on a read-only root with
        # only the rendered tmpfs writable.
        script = (
            "import json, os\n"
            "def w(p):\n"
            "    try:\n"
            "        open(p, 'w').close(); os.remove(p); return True\n"
            "    except OSError:\n"
            "        return False\n"
            "argv = open('/proc/1/cmdline').read().split(chr(0))[:-1]\n"
            "print(json.dumps([argv, os.getuid(), os.getgid(), w('/tmp/x'), w('/app/x')]))"
        )
        got = podlib.run(stack.eng, "exec", stack.pod.cname(c), "python", "-c", script)
        argv, uid, gid, tmp_ok, root_ok = yaml.safe_load(got)
        assert argv == [*spec["command"], *spec.get("args", [])], argv
        sc = spec["securityContext"]
        assert (uid, gid) == (sc["runAsUser"], sc["runAsGroup"])
        assert tmp_ok and not root_ok, (tmp_ok, root_ok)
        assert stack.started[comp], comp


def test_every_probe_the_chart_renders_passes(stack: Stack) -> None:
    seen = []
    for comp in ORDER:
        c = stack.c(comp)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            ok, what = stack.pod.probe(c, c.spec[kind])
            assert ok, f"{comp} {kind}: {what}"
            seen.append(f"{comp} {kind}: {what}")
    kinds = " ".join(seen)
    assert "grpc health" in kinds and "GET" in kinds, seen
    print("\n".join(seen))


def _client(stack: Stack, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=60)


def test_miss_hit_stream_and_budget_with_the_openai_sdk(stack: Stack) -> None:
    client = _client(stack)

    def ask() -> tuple[str, dict[str, str]]:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", temperature=0, messages=[{"role": "user", "content": PROMPT}]
        )
        content = raw.parse().choices[0].message.content or ""
        return content, {k.lower(): v for k, v in raw.headers.items()}

    first, h1 = ask()
    assert first and h1["x-tollgate-cache"] != "hit", h1
    assert float(h1["x-tollgate-cost-usd"]) > 0
    # The same request: answered by the cache container, through Redis. The store after a
    # miss runs in the background, so the repeat may come a moment too early.
    for _ in range(20):
        second, h2 = ask()
        if h2["x-tollgate-cache"] == "hit":
            break
        time.sleep(0.25)
    assert h2["x-tollgate-cache"] == "hit", (
        h2,
        stack.pod.logs("cache"),
        stack.pod.logs("orchestrator"),
    )
    assert second == first and float(h2["x-tollgate-cost-usd"]) == 0.0

    chunks, usage = 0, None
    for chunk in client.chat.completions.create(
        model="auto",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Write a short poem about autumn leaves."}],
    ):
        chunks += 1
        usage = chunk.usage or usage
    assert chunks > 1 and usage is not None and usage.total_tokens > 0

    broke = _client(stack, BROKE)
    extra = {"Cache-Control": "no-cache"}
    msgs: Any = [{"role": "user", "content": "hello"}]
    assert broke.chat.completions.create(model="auto", messages=msgs, extra_headers=extra).choices
    with pytest.raises(openai.RateLimitError) as info:  # the chart's budget, in budget Redis
        broke.chat.completions.create(model="auto", messages=msgs, extra_headers=extra)
    assert info.value.code == "insufficient_quota"
    with pytest.raises(openai.AuthenticationError):
        _client(stack, "sk-not-a-key-of-this-install-000000").models.list()


def test_every_servicemonitor_endpoint_serves_metrics(stack: Stack) -> None:
    """What Prometheus would scrape: each ServiceMonitor's port (through its Service's
    targetPort) and path, on the container behind it."""
    scraped = {}
    for sm in of_kind(stack.docs, "ServiceMonitor"):
        comp = sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        if comp not in stack.pod.containers:
            continue  # the operator: not run here (see test_operator_container_*)
        c = stack.c(comp)
        for ep in sm["spec"]["endpoints"]:
            svc = next(
                s
                for s in of_kind(stack.docs, "Service")
                if s["spec"]["selector"].get("app.kubernetes.io/component") == comp
                and any(p["name"] == ep["port"] for p in s["spec"]["ports"])
            )
            target = next(p["targetPort"] for p in svc["spec"]["ports"] if p["name"] == ep["port"])
            url = stack.pod.url(c, target, ep.get("path", "/metrics"))
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
            names = {f.name for f in text_string_to_metric_families(text)}
            assert any(n.startswith("tollgate_") for n in names), (comp, sorted(names)[:20])
            scraped[comp] = len(names)
    assert set(scraped) == {"router", "cache", "orchestrator"}, scraped  # the simulator has none
    print(f"metric families per container: {scraped}")


# --- SIGTERM under load: last, it stops the orchestrator -------------------------------------


async def _load(stack: Stack, clients: int = 8) -> tuple[list[tuple[float, bool, str]], float]:
    url = stack.base_url + "/v1/chat/completions"
    auth = {"Authorization": f"Bearer {KEY}", "Cache-Control": "no-cache"}
    out: list[tuple[float, bool, str]] = []  # (sent, got an answer start, outcome)
    term: list[float] = []
    stop = asyncio.Event()

    async def worker(n: int) -> None:
        limits = httpx2.Limits(max_keepalive_connections=0)  # "accepted" is unambiguous
        async with httpx2.AsyncClient(timeout=30, limits=limits) as client:
            i = 0
            while not stop.is_set():
                stream = n % 2 == 1
                body = {
                    "model": "auto",
                    "stream": stream,
                    "messages": [{"role": "user", "content": f"Tell me about shutdown {n}-{i}."}],
                }
                sent = time.monotonic()
                i += 1
                try:
                    async with client.stream("POST", url, json=body, headers=auth) as resp:
                        raw = b"".join([b async for b in resp.aiter_bytes()])
                except httpx2.ConnectError:
                    out.append((sent, False, "refused"))
                    return
                except (httpx2.RemoteProtocolError, httpx2.ReadError) as exc:
                    after = bool(term) and sent >= term[0]
                    out.append((sent, False, "unaccepted" if after else f"vanished {exc!r}"))
                    return
                if resp.status_code != 200:
                    out.append((sent, True, f"error {resp.status_code}"))
                    continue
                done = raw.rstrip().endswith(b"data: [DONE]") if stream else b'"choices"' in raw
                out.append((sent, True, "completed" if done else f"cut {raw[-200:]!r}"))

    orch = stack.c("orchestrator")
    tasks = [asyncio.create_task(worker(n)) for n in range(clients)]
    await asyncio.sleep(1.5)
    # The kubelet runs the preStop hook, then sends SIGTERM: the rendered hook, in the container.
    pre = orch.spec["lifecycle"]["preStop"]["exec"]["command"]
    await asyncio.to_thread(podlib.run, stack.eng, "exec", stack.pod.cname(orch), *pre)
    term.append(time.monotonic())
    podlib.run(stack.eng, "kill", "--signal", "TERM", stack.pod.cname(orch))
    await asyncio.sleep(0.3)
    ok, what = stack.pod.probe(orch, orch.spec["readinessProbe"])
    assert not ok, f"still ready while draining: {what}"
    grace = float(orch.pod_spec["terminationGracePeriodSeconds"])
    await asyncio.to_thread(
        podlib.run, stack.eng, "wait", stack.pod.cname(orch), timeout=grace + 15
    )
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return out, term[0]


def test_sigterm_under_load_loses_no_accepted_request(stack: Stack) -> None:
    results, term = asyncio.run(_load(stack))
    before = [r for r in results if r[0] < term]
    assert len(before) >= 8, f"too little load before the SIGTERM: {len(before)}"
    lost = [r for r in results if r[1] and r[2] != "completed" and not r[2].startswith("error")]
    assert not lost, f"answers started and not finished: {lost}"
    vanished = [r for r in results if r[2].startswith("vanished")]
    assert not vanished, vanished
    assert all(r[2] == "completed" for r in before if r[1]), before
    status, code = stack.pod.state("orchestrator")
    assert (status, code) == ("exited", 0), (status, code, stack.pod.logs("orchestrator"))
    counts: dict[str, int] = {}
    for r in results:
        counts[r[2].split()[0]] = counts.get(r[2].split()[0], 0) + 1
    print(f"SIGTERM under load: {counts}")


# --- a chart change that breaks a container fails this test ---------------------------------


@pytest.mark.parametrize(
    ("sets", "comp", "expect"),
    [
        # A command the image cannot run: `python -m` of a module it does not hold.
        (("services.router.module=tollgate_routr",), "router", "No module named tollgate_routr"),
        # An env value the service refuses: the container exits before its startup probe passes.
        (
            ("services.cache.env.TOLLGATE_CACHE_BACKEND=memcached",),
            "cache",
            "TOLLGATE_CACHE_BACKEND",
        ),
    ],
    ids=["router-command", "cache-env"],
)
def test_a_chart_change_that_breaks_a_container_fails(
    stack: Stack, tmp_path: Path, sets: tuple[str, ...], comp: str, expect: str
) -> None:
    """The same start as the stack's, from a render with one bad value: it must fail, with
    the container's own complaint. (Uses its own pods, after the stack's tests.)"""
    with podlib.pods(stack.eng) as made, pytest.raises(AssertionError) as info:
        pods, _ = start_stack(stack.eng, tmp_path, sets=sets, only=(comp,), prefix="broken")
        made += pods
    assert f"{comp} exited" in str(info.value) or "never passed" in str(info.value), info.value
    assert expect in str(info.value), str(info.value)[-2000:]
