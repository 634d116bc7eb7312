"""The gRPC servicer: ``Complete`` (the chat dialect, whole answers) and ``UpdateBudgets``.

Errors leave as gRPC statuses (UNAUTHENTICATED, INVALID_ARGUMENT, NOT_FOUND,
RESOURCE_EXHAUSTED, UNAVAILABLE, ...) whose details are the OpenAI error JSON.
``UpdateBudgets`` is for the operator only (``CALLERS``, checked by
tollgate_common.grpc.auth before the handler runs); ``Complete`` is public at the
gRPC layer because the tenant's API key authenticates it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc
import orjson

from tollgate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tollgate_common.budgets import DEFAULT_ACTION, PERIODS, validate_budget
from tollgate_common.grpc.auth import PUBLIC, Allowed
from tollgate_common.logging import request_id_var
from tollgate_orchestrator.admission import request_id
from tollgate_orchestrator.config import BudgetSpec
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.types import Whole
from tollgate_orchestrator.validation import decode_json, parse_chat_request

if TYPE_CHECKING:  # the composition root imports the faces, not the reverse
    from tollgate_orchestrator.wiring import Gateway

log = logging.getLogger(__name__)

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name

# Who may call each method (docs/security.md H-3).
CALLERS: dict[str, Allowed] = {
    f"/{SERVICE_NAME}/Complete": PUBLIC,
    f"/{SERVICE_NAME}/UpdateBudgets": frozenset({"operator"}),
}

GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(err: ApiError) -> grpc.StatusCode:
    code = GRPC_CODES.get(err.status)
    if code is not None:
        return code
    return grpc.StatusCode.INVALID_ARGUMENT if err.status < 500 else grpc.StatusCode.INTERNAL


def _metadata(context: grpc.aio.ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def parse_budget(i: int, b: orchestrator_pb2.Budget) -> BudgetSpec:
    action = b.action or DEFAULT_ACTION
    problems = validate_budget(
        b.tenant, b.period, b.limit_usd, action, tuple(b.thresholds), prefix=f"budgets[{i}]."
    )
    if problems:
        raise ValueError("; ".join(problems))
    return BudgetSpec.model_validate(
        {
            "tenant": b.tenant,
            "period": b.period,
            "limit_usd": b.limit_usd,
            "action": action,
            "thresholds": tuple(b.thresholds),
            "source": b.source or "grpc",
        }
    )


class OrchestratorService(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def Complete(
        self,
        request: orchestrator_pb2.CompleteRequest,
        context: grpc.aio.ServicerContext,
    ) -> orchestrator_pb2.CompleteResponse:
        gw = self.gw
        try:
            adm = gw.admissions.open(request_id(_metadata(context, "x-request-id")))
        except ApiError as err:
            await context.abort(grpc_code(err), err.body().decode())
            raise AssertionError("unreachable") from None  # abort raises
        token = request_id_var.set(adm.request_id)
        try:
            adm.assign(gw.keys.tenant_for(_metadata(context, "authorization")))
            if len(request.request_json) > gw.settings.max_body_bytes:
                raise ApiError(
                    413, "request_json is too large.", param="request_json", reason="size"
                )
            data = decode_json(request.request_json)
            if isinstance(data, dict):
                data.pop("stream", None)  # Complete does not stream: answer whole
            outcome = await gw.pipeline.handle(adm, parse_chat_request(data, gw.limits))
        except ApiError as err:
            gw.admissions.rejected(err)
            await context.abort(grpc_code(err), err.body().decode())
            raise AssertionError("unreachable") from None
        finally:
            await adm.close()
            request_id_var.reset(token)
        assert isinstance(outcome, Whole)
        meta = outcome.meta
        return orchestrator_pb2.CompleteResponse(
            response_json=outcome.body,
            model=meta.model,
            intent=meta.intent,
            cache=meta.cache,
            cost_usd=meta.cost or 0.0,
            request_id=adm.request_id,
        )

    async def UpdateBudgets(
        self,
        request: orchestrator_pb2.UpdateBudgetsRequest,
        context: grpc.aio.ServicerContext,
    ) -> orchestrator_pb2.UpdateBudgetsResponse:
        try:
            added = [parse_budget(i, b) for i, b in enumerate(request.budgets)]
            removed = []
            for i, ref in enumerate(request.removed):
                if not ref.tenant or ref.period not in PERIODS:
                    raise ValueError(f"removed[{i}]: needs a tenant and a period (day or month)")
                removed.append((ref.tenant, ref.period))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from None
        budgets = self.gw.budgets
        applied = budgets.update(added, removed)
        log.info("budgets updated", extra={"applied": applied, "budgets": len(budgets.specs)})
        return orchestrator_pb2.UpdateBudgetsResponse(applied=applied)


def error_json(details: str | None) -> dict[str, object]:
    """The OpenAI error object inside a status's details (for clients and tests)."""
    try:
        data = orjson.loads(details or "")
    except orjson.JSONDecodeError:
        return {}
    return data.get("error", {}) if isinstance(data, dict) else {}
