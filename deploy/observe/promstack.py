"""Local Prometheus and Alertmanager with tollgate's config: used by `make observe`
and by the monitoring end-to-end test.

The committed ``prometheus.yml`` and ``alertmanager.yml`` beside this file are the
base; ``render_*`` fills in ports, targets, receiver URLs and timings and makes every
path absolute, so the rendered files can live in any run directory.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tools.stack import Proc, spawn, wait_http

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RULES_FILE = ROOT / "alerts" / "tollgate-rules.yaml"
PROMETHEUS_BASE = HERE / "prometheus.yml"
ALERTMANAGER_BASE = HERE / "alertmanager.yml"
TEMPLATE = HERE / "tollgate.tmpl"


class MissingBinary(RuntimeError):
    """prometheus or prometheus-alertmanager is not installed."""


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingBinary(f"{name} is not installed: run `make system-deps`")
    return path


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def render_prometheus(
    targets: Mapping[str, str],
    alertmanager: str,
    rule_files: Sequence[Path] = (RULES_FILE,),
    interval: str | None = None,
) -> dict[str, Any]:
    """The Prometheus config: one scrape job per ``targets`` entry (job name -> host:port,
    or host:port/path), alerts sent to ``alertmanager`` (host:port)."""
    cfg = _load(PROMETHEUS_BASE)
    if interval:
        cfg["global"]["scrape_interval"] = interval
        cfg["global"]["evaluation_interval"] = interval
    cfg["rule_files"] = [str(Path(p).resolve()) for p in rule_files]
    cfg["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    base_jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    jobs = []
    for name, target in targets.items():
        address, _, path = target.partition("/")
        job = dict(base_jobs.get(name, {"job_name": name}))
        job["metrics_path"] = "/" + (path or "metrics")
        job["static_configs"] = [{"targets": [address]}]
        jobs.append(job)
    cfg["scrape_configs"] = jobs
    return cfg


@dataclass(frozen=True)
class Receivers:
    """Where Alertmanager sends notifications; None drops that integration."""

    webhook_url: str | None = None
    slack_url: str | None = None
    discord_url: str | None = None


def render_alertmanager(
    receivers: Receivers,
    group_wait: str | None = None,
    group_interval: str | None = None,
    repeat_interval: str | None = None,
) -> dict[str, Any]:
    cfg = _load(ALERTMANAGER_BASE)
    cfg["templates"] = [str(TEMPLATE)]
    route = cfg["route"]
    for key, value in (
        ("group_wait", group_wait),
        ("group_interval", group_interval),
        ("repeat_interval", repeat_interval),
    ):
        if value:
            route[key] = value
    (receiver,) = (r for r in cfg["receivers"] if r["name"] == route["receiver"])
    for key, url_field, url in (
        ("webhook_configs", "url", receivers.webhook_url),
        ("slack_configs", "api_url", receivers.slack_url),
        ("discord_configs", "webhook_url", receivers.discord_url),
    ):
        if url:
            for integration in receiver[key]:
                integration[url_field] = url
        else:
            del receiver[key]
    return cfg


def write_yaml(path: Path, data: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path


def start_prometheus(
    config: Path, port: int, data_dir: Path, log_dir: Path, *, exemplars: bool = False
) -> Proc:
    """Prometheus on 127.0.0.1:``port``; ``exemplars`` turns on its in-memory exemplar
    storage (``/api/v1/query_exemplars``; it scrapes OpenMetrics, which carries them)."""
    proc = spawn(
        "prometheus",
        [
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url=http://127.0.0.1:{port}",
            *(["--enable-feature=exemplar-storage"] if exemplars else []),
        ],
        {"PATH": "/usr/bin:/bin"},
        log_dir,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", proc)
    except BaseException:
        proc.stop()
        raise
    return proc


def start_alertmanager(config: Path, port: int, data_dir: Path, log_dir: Path) -> Proc:
    proc = spawn(
        "alertmanager",
        [
            binary("prometheus-alertmanager"),
            f"--config.file={config}",
            f"--storage.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url=http://127.0.0.1:{port}",
            # No HA gossip: it would bind 0.0.0.0:9094 and clash between instances.
            "--cluster.listen-address=",
        ],
        {"PATH": "/usr/bin:/bin"},
        log_dir,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", proc)
    except BaseException:
        proc.stop()
        raise
    return proc
