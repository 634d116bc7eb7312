"""The LiteLLM proxy as a peer: installed into its own venv, pointed at the simulator.

``.bench/litellm-venv`` gets ``litellm[proxy]`` at the pinned version (first run
only). The proxy runs with 1 worker, one model routed to the same simulator as
tollgate, a master key (so auth runs on every request, as tollgate's does), the
Prometheus callback on, and no database. The model cost map is the one bundled
in the package: the bench machine reaches no network at run time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.stack import ROOT, Proc, base_env, free_port, spawn, wait_http

# 1.110.x needs `litellm-proxy`, and 1.108.8+ a `litellm-enterprise` post-release, that
# the package index this machine can reach does not carry: 1.108.7 is the newest whose
# [proxy] extra installs here.
LITELLM_VERSION = "1.108.7"
PROMETHEUS_CLIENT = "prometheus-client==0.26.0"
VENV = ROOT / ".bench" / "litellm-venv"
MASTER_KEY = "sk-bench-litellm"
_VERSION_CHECK = "import importlib.metadata as m, prometheus_client; print(m.version('litellm'))"


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def installed_version(venv: Path = VENV) -> str | None:
    py = venv_python(venv)
    if not py.exists():
        return None
    out = subprocess.run(
        # prometheus_client too: without it the Prometheus callback stops the proxy at start
        [str(py), "-c", _VERSION_CHECK],
        capture_output=True,
        text=True,
        check=False,
    )
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def ensure_installed(venv: Path = VENV, version: str = LITELLM_VERSION) -> Path:
    """Create the venv and install the pinned LiteLLM unless it is already there."""
    if installed_version(venv) == version:
        return venv_python(venv)
    print(f"installing litellm[proxy]=={version} into {venv} (first run only)", flush=True)
    if not venv_python(venv).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv_python(venv)), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, f"litellm[proxy]=={version}", PROMETHEUS_CLIENT], check=True)
    return venv_python(venv)


def config_yaml(
    upstream_v1: str, model: str = "gpt-4o-mini", prometheus: bool = True, upstream_key: str = ""
) -> str:
    """The proxy's config: one model on the simulator; no DB, no cache, no retries."""
    callbacks = '  callbacks: ["prometheus"]\n' if prometheus else ""
    return (
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        f"      model: openai/{model}\n"
        f"      api_base: {upstream_v1}\n"
        f"      api_key: {upstream_key or 'sk-unused'}\n"
        "litellm_settings:\n"
        f"{callbacks}"
        "  num_retries: 0\n"
        "  request_timeout: 30\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
        "  disable_spend_logs: true\n"
    )


def start(
    upstream_v1: str,
    work: Path,
    port: int | None = None,
    workers: int = 1,
    upstream_key: str = "",
) -> tuple[Proc, int]:
    """Start the proxy on loopback and wait until it answers: (process, port)."""
    python = ensure_installed()
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "litellm.yaml"
    cfg.write_text(config_yaml(upstream_v1, upstream_key=upstream_key))
    port = port or free_port()
    env = base_env(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download at start
            "LITELLM_LOG": "ERROR",
            "LITELLM_MODE": "PRODUCTION",
            "DISABLE_ADMIN_UI": "True",
            "NO_DOCS": "True",
        }
    )
    env.pop("PYTHONPATH", None)  # its own venv, nothing of ours
    litellm = python.parent / "litellm"
    args = [
        str(litellm),
        "--config",
        str(cfg),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
    ]
    proc = spawn("litellm", args, env, work)
    try:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, timeout=180)
    except BaseException:
        proc.stop()
        raise
    return proc, port
