"""The operator's composition root: kopf settings, registry and context, run until stopped.

kopf owns the loop's signals: SIGTERM stops its watchers and lets running handlers end.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf

from tollgate_common.config import ConfigError
from tollgate_common.logging import JsonFormatter
from tollgate_common.metrics import Families, create_families
from tollgate_common.metrics.exposition import start_metrics_server
from tollgate_operator import handlers
from tollgate_operator.config import OperatorSettings
from tollgate_operator.k8s import Kube
from tollgate_operator.push import Pusher
from tollgate_operator.reconcile import Context

log = logging.getLogger("tollgate_operator")

# Record attributes kopf's object loggers add for its event poster, not for log lines.
_KOPF_EXTRAS = ("settings", "k8s_skip", "k8s_ref")


class _Formatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        ref = getattr(record, "k8s_ref", None)
        record = logging.makeLogRecord(
            {k: v for k, v in record.__dict__.items() if k not in _KOPF_EXTRAS}
        )
        if isinstance(ref, dict):
            record.object = f"{ref.get('kind')}/{ref.get('namespace')}/{ref.get('name')}"
        return super().format(record)


def kopf_settings() -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    # Namespace-scoped with explicit names: no namespace or CRD scans, so no cluster RBAC.
    s.scanning.disabled = True
    # Success is in the status conditions; Kubernetes events only for problems.
    s.posting.level = logging.WARNING
    s.persistence.finalizer = "tollgate.dev/operator"
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tollgate.dev")
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="tollgate.dev")
    # Re-open watches regularly so a silently dropped connection cannot stall the operator.
    s.watching.server_timeout = 270
    s.watching.client_timeout = 300
    return s


def build_registry(ctx: Context) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the service account; elsewhere (kind, tests): $KUBECONFIG.
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    handlers.register(registry, ctx)
    return registry


async def run(
    settings: OperatorSettings,
    families: Families,
    namespace: str,
    stop_flag: threading.Event | asyncio.Event | None = None,
) -> None:
    ks = kopf_settings()
    ctx = Context(
        settings=settings,
        namespace=namespace,
        kube=Kube(ks),
        pusher=Pusher(
            families,
            settings.push_timeout_seconds,
            token_file=settings.grpc_token_file,
            tls_ca=settings.peer_tls_ca,
            tls_cert=settings.peer_tls_cert,
            tls_key=settings.peer_tls_key,
            tls_server_names={
                "router": settings.router_service,
                "orchestrator": settings.orchestrator_service,
            },
        ),
        families=families,
    )
    await kopf.operator(
        registry=build_registry(ctx),
        settings=ks,
        standalone=True,  # one replica with the Recreate strategy: no peering objects
        namespaces=[namespace],
        liveness_endpoint=f"http://{settings.host}:{settings.health_port}/healthz",
        stop_flag=stop_flag,
    )


async def serve(settings: OperatorSettings) -> None:
    namespace = settings.resolved_namespace()
    if not namespace:
        raise ConfigError(
            "namespace: not set and not running in a pod (env TOLLGATE_OPERATOR_NAMESPACE)"
        )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_Formatter("operator"))
    families = create_families("operator")
    start_metrics_server(families.registry, settings.metrics_port, settings.host)
    log.info("starting", extra={"namespace": namespace, "health_port": settings.health_port})
    await run(settings, families, namespace)
