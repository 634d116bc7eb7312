"""Run rendered Kubernetes Deployments as podman (or docker) containers, the way a kubelet
would run them: the container's command/args, env (valueFrom resolved), its user, read-only
root, dropped capabilities, emptyDirs as tmpfs, ConfigMap and Secret volumes as read-only
bind mounts of the rendered data (Secrets 0440 and group-owned by fsGroup, like the
kubelet's), and its startup, readiness and liveness probes run as the kubelet runs them:
httpGet, gRPC health and tcpSocket against the pod's ports, exec inside the container.

Every component of one release shares one pod (one network namespace); each Service name
resolves to that pod (--add-host), so the env's peer addresses work unchanged. The pod's
ports are published on 127.0.0.1 only, where the test (the "node") reaches them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.chart import ROOT, Manifest, missing, of_kind
from tools.stack import free_port

IMAGE_SH = ROOT / "tools" / "image.sh"
POD_PREFIX = "tollgate-image-test"


def engine() -> list[str]:
    """The engine command line tools/image.sh builds with (docker, or podman [--runtime runc])."""
    proc = subprocess.run(
        ["bash", str(IMAGE_SH), "engine"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        missing("the image and the containerised stack", proc.stderr.strip() or "no engine")
    return proc.stdout.split()


def build(image: str) -> None:
    """`make image` (tools/image.sh build); the engine's layer cache makes a rebuild quick."""
    proc = subprocess.run(
        ["bash", str(IMAGE_SH), "build"],
        env={**os.environ, "IMAGE": image},
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    if proc.returncode != 0:
        raise AssertionError(f"tools/image.sh build failed:\n{proc.stdout[-4000:]}{proc.stderr}")


def run(eng: Sequence[str], *args: str, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(
        [*eng, *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join([*eng, *args])} failed: {proc.stderr.strip()}")
    return proc.stdout


def redis_image(eng: Sequence[str]) -> str:
    """An image of Debian's redis-server and redis-cli (the host's package, with the libraries
    they link), standing in for deploy/kind/redis.yaml's redis:7.4-alpine: no registry here.
    Like that image (built with protected mode off, since a container's clients are never
    local) it runs with --protected-mode no; the rendered args follow."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        missing("the containerised stack", "redis-server is not installed: `make system-deps`")
        raise AssertionError("unreachable")
    version = run([], server, "--version").split()[2].removeprefix("v=")
    tag = f"localhost/tollgate-test-redis:{version}-1"  # -1: this recipe
    if subprocess.run([*eng, "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag
    root = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip())
    try:
        files = {server, cli}
        for exe in (server, cli):
            for line in run([], "ldd", exe).splitlines():
                files |= set(re.findall(r"(/\S+)", line))
        for f in files:
            dest = root / f.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(f), dest)
        (root / "data").mkdir()
        (root / "tmp").mkdir(mode=0o1777)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [
                *eng,
                "import",
                "-q",
                "--change",
                f'ENTRYPOINT ["{server}", "--protected-mode", "no"]',
                "--change",
                "WORKDIR /data",
                "--change",
                f"ENV PATH={Path(cli).parent}",
                "-",
                tag,
            ],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
        )
        tar.wait()
    finally:
        shutil.rmtree(root)
    return tag


# --- from a rendered Deployment to a container ------------------------------------------


@dataclass
class Container:
    """One rendered container, ready to run: `podman run` options and its probes."""

    name: str  # the component (app.kubernetes.io/component) or the Deployment's name
    spec: Manifest  # the container as rendered
    pod_spec: Manifest
    image: str
    options: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ports(self) -> dict[str, int]:
        return {p["name"]: int(p["containerPort"]) for p in self.spec.get("ports", [])}

    def port(self, ref: int | str) -> int:
        return ref if isinstance(ref, int) else self.ports[ref]


def _security(pod: Manifest, c: Manifest) -> list[str]:
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    opts = []
    user = csc.get("runAsUser", psc.get("runAsUser"))
    group = csc.get("runAsGroup", psc.get("runAsGroup"))
    if user is not None:
        opts += ["--user", f"{user}:{group if group is not None else user}"]
    if psc.get("fsGroup") is not None:
        opts += ["--group-add", str(psc["fsGroup"])]
    if csc.get("readOnlyRootFilesystem"):
        opts.append("--read-only")
    for cap in (csc.get("capabilities") or {}).get("drop", []):
        opts += ["--cap-drop", cap]
    if csc.get("allowPrivilegeEscalation") is False:
        opts += ["--security-opt", "no-new-privileges"]
    if csc.get("privileged"):
        opts.append("--privileged")
    return opts


def _secret_data(
    docs: Sequence[Manifest], extra: dict[str, dict[str, str]], name: str
) -> dict[str, bytes]:
    rendered = [s for s in of_kind(docs, "Secret") if s["metadata"]["name"] == name]
    if rendered:
        data = rendered[0].get("data") or {}
        out = {k: base64.b64decode(v) for k, v in data.items()}
        out |= {k: v.encode() for k, v in (rendered[0].get("stringData") or {}).items()}
        return out
    if name in extra:  # a Secret the user creates before installing
        return {k: v.encode() for k, v in extra[name].items()}
    raise AssertionError(f"Secret {name} is neither rendered nor given to the test")


def _write_volume(
    folder: Path, files: dict[str, bytes], items: list[Manifest] | None, mode: int, gid: int | None
) -> None:
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    chosen = {i["key"]: i["path"] for i in items} if items else {k: k for k in files}
    for key, path in chosen.items():
        assert key in files, f"{folder.name}: key {key} is not in the rendered data"
        dest = folder / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(files[key])
        dest.chmod(mode)
        if gid is not None:  # the kubelet gives the files to fsGroup
            with contextlib.suppress(PermissionError):
                os.chown(dest, 0, gid)
                continue
            dest.chmod(mode | 0o444)  # not root: readable by all instead


def container(
    dep: Manifest,
    docs: Sequence[Manifest],
    workdir: Path,
    images: dict[str, str],
    secrets: dict[str, dict[str, str]],
    namespace: str,
    pod_name: str,
) -> Container:
    """The single container of a rendered Deployment, as `podman run` options."""
    pod = dep["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1, dep["metadata"]["name"]
    c = pod["containers"][0]
    name = (
        dep["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        or dep["metadata"]["name"]
    )
    image = images.get(c["image"], c["image"])
    out = Container(name=name, spec=c, pod_spec=pod, image=image)
    out.options += _security(pod, c)
    gid = (pod.get("securityContext") or {}).get("fsGroup")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        vol = volumes[m["name"]]
        if "emptyDir" in vol:
            size = str(vol["emptyDir"].get("sizeLimit", "64Mi")).removesuffix("i").lower()
            out.options += ["--tmpfs", f"{m['mountPath']}:rw,size={size},mode=1777"]
            continue
        folder = workdir / name / m["name"]
        if "configMap" in vol:
            cm_name = vol["configMap"]["name"]
            cms = [x for x in of_kind(docs, "ConfigMap") if x["metadata"]["name"] == cm_name]
            assert cms or vol["configMap"].get("optional"), f"ConfigMap {cm_name} not rendered"
            files = {k: v.encode() for k, v in (cms[0].get("data") or {}).items()} if cms else {}
            items = vol["configMap"].get("items") if cms else None
            mode = vol["configMap"].get("defaultMode", 0o644)
            _write_volume(folder, files, items, mode, None)
        elif "secret" in vol:
            files = _secret_data(docs, secrets, vol["secret"]["secretName"])
            mode = vol["secret"].get("defaultMode", 0o644)
            _write_volume(folder, files, vol["secret"].get("items"), mode, gid)
        else:
            raise AssertionError(f"{name}: volume {m['name']} of an unsupported kind: {vol}")
        out.options += ["-v", f"{folder}:{m['mountPath']}:ro"]
    fields = {"metadata.namespace": namespace, "metadata.name": pod_name}
    for e in c.get("env", []):
        value = e.get("value")
        if value is None:
            ref = e["valueFrom"]
            if "fieldRef" in ref:
                value = fields[ref["fieldRef"]["fieldPath"]]
            else:
                key = ref["secretKeyRef"]
                value = _secret_data(docs, secrets, key["name"])[key["key"]].decode()
        # The kubelet expands $(VAR) from the variables defined before it.
        value = re.sub(r"\$\(([A-Za-z_]\w*)\)", lambda m: out.env.get(m[1], m[0]), value)
        out.env[name_ := e["name"]] = value
        out.options += ["--env", f"{name_}={value}"]
    grace = dep["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    out.options += ["--stop-timeout", str(grace)]
    return out


# --- the pod --------------------------------------------------------------------------------


class Pod:
    """A podman pod holding containers in one network namespace, ports on 127.0.0.1."""

    def __init__(self, eng: list[str], name: str, ports: Sequence[int], hosts: dict[str, str]):
        self.eng = eng
        self.name = name
        self.published = {p: free_port() for p in ports}
        run(eng, "pod", "rm", "-f", "-t", "0", name, check=False)
        args = ["pod", "create", "--name", name]
        for inner, outer in self.published.items():
            args += ["-p", f"127.0.0.1:{outer}:{inner}"]
        for host, ip in hosts.items():
            args += ["--add-host", f"{host}:{ip}"]
        run(eng, *args)
        self.containers: dict[str, Container] = {}

    def ip(self) -> str:
        infra = run(self.eng, "pod", "inspect", self.name, "--format", "{{.InfraContainerID}}")
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return run(self.eng, "inspect", infra.strip(), "--format", fmt).strip()

    def cname(self, c: Container) -> str:
        return f"{self.name}-{c.name}"

    def start(self, c: Container) -> None:
        args = ["run", "-d", "--pod", self.name, "--name", self.cname(c), *c.options]
        if self.eng[0] == "podman" and "--read-only" in c.options:
            # podman would add its own tmpfs on /tmp, /run, /var/tmp: only the pod's mounts.
            args.append("--read-only-tmpfs=false")
        command = c.spec.get("command")
        if command:  # Kubernetes' command replaces the image's ENTRYPOINT, args its CMD
            args += ["--entrypoint", json.dumps(command)]
        run(self.eng, *args, c.image, *c.spec.get("args", []))
        self.containers[c.name] = c

    def logs(self, name: str, tail: int = 60) -> str:
        proc = subprocess.run(
            [*self.eng, "logs", "--tail", str(tail), f"{self.name}-{name}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.stdout + proc.stderr

    def state(self, name: str) -> tuple[str, int]:
        out = run(
            self.eng,
            "inspect",
            f"{self.name}-{name}",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
        ).split()
        return out[0], int(out[1])

    def url(self, c: Container, port: int | str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.published[c.port(port)]}{path}"

    def probe(self, c: Container, probe: Manifest) -> tuple[bool, str]:
        """One probe as the kubelet runs it: (passed, what it saw)."""
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = self.url(c, get["port"], get.get("path", "/"))
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    return 200 <= r.status < 400, f"GET {url}: {r.status}"
            except urllib.error.HTTPError as exc:
                return False, f"GET {url}: {exc.code}"
            except OSError as exc:
                return False, f"GET {url}: {exc}"
        if "grpc" in probe:
            return grpc_health(self.published[c.port(probe["grpc"]["port"])], probe, timeout)
        if "tcpSocket" in probe:
            port = self.published[c.port(probe["tcpSocket"]["port"])]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                    return True, f"tcp {port}: connected"
            except OSError as exc:
                return False, f"tcp {port}: {exc}"
        if "exec" in probe:
            cmd = probe["exec"]["command"]
            proc = subprocess.run(
                [*self.eng, "exec", self.cname(c), *cmd],
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout + 10,
            )
            return proc.returncode == 0, f"exec {cmd}: {proc.returncode} {proc.stdout.strip()}"
        raise AssertionError(f"unsupported probe {probe}")

    def wait_started(self, c: Container) -> list[str]:
        """Run the startup probe (then readiness) at its period until it passes, within its
        failureThreshold like the kubelet; fail with the logs if the container exits."""
        seen = []
        for kind in ("startupProbe", "readinessProbe"):
            probe = c.spec.get(kind)
            if not probe:
                continue
            period = float(probe.get("periodSeconds", 10))
            tries = int(probe.get("failureThreshold", 3)) if kind == "startupProbe" else 30
            for _ in range(tries):
                status, code = self.state(c.name)
                if status != "running":
                    # Let the engine finish with it: its logs are complete once it is reaped.
                    run(self.eng, "wait", self.cname(c), check=False, timeout=30)
                    status, code = self.state(c.name)
                    raise AssertionError(
                        f"{c.name} exited ({status}, exit {code}) before its {kind} passed:\n"
                        + self.logs(c.name)
                    )
                ok, what = self.probe(c, probe)
                if ok:
                    seen.append(f"{kind} {what}")
                    break
                time.sleep(min(period, 1.0))
            else:
                raise AssertionError(
                    f"{c.name}: {kind} never passed ({what}):\n" + self.logs(c.name)
                )
        return seen

    def remove(self) -> None:
        run(self.eng, "pod", "rm", "-f", "-t", "0", self.name, check=False, timeout=60)


def grpc_health(port: int, probe: Manifest, timeout: float) -> tuple[bool, str]:
    """The kubelet's native gRPC probe: grpc.health.v1 Check, plaintext, no credentials."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    service = probe["grpc"].get("service", "")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=max(timeout, 2)
            )
        except grpc.RpcError as exc:
            return False, f"grpc health {port}: {exc.code()}"
    serving = resp.status == health_pb2.HealthCheckResponse.SERVING
    return (
        serving,
        f"grpc health {port}: {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}",
    )


@contextlib.contextmanager
def pods(eng: list[str]) -> Iterator[list[Pod]]:
    made: list[Pod] = []
    try:
        yield made
    finally:
        for p in reversed(made):
            p.remove()
