"""The Responses API's state around the pipeline: ``store``, ``previous_response_id``,
``item_reference``, and ``GET``/``DELETE /v1/responses/{id}`` and its ``input_items``.

``before`` expands a follow-up turn before anything is routed, priced or cached: its
input becomes the previous turn's input, that turn's output and this turn's input,
with every item reference replaced by the item it names, so the upstream never needs
state of its own (nor does a chat-only one). A request that names what is not there
(another tenant's response, a deleted or expired one, an unknown id) is a 400, never a
silent restart of the conversation. A follow-up with ``model: auto`` goes to the model
that answered the previous turn (affinity); an explicit model is pinned by the router.

``after`` and ``watch`` keep the answer (``store`` defaults to true) in a background
task: the client never waits for the store, and a store that fails costs a warning
and a count, never the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from tollgate_orchestrator.catalog import AUTO, Catalog
from tollgate_orchestrator.dialects.responses_request import has_image
from tollgate_orchestrator.errors import ERROR_TYPE_SERVER, ApiError, bad_request
from tollgate_orchestrator.http_api import RESPONSE_PATHS, error_response
from tollgate_orchestrator.openapi import ERROR_SCHEMA
from tollgate_orchestrator.responses_store import (
    MAX_ID_CHARS,
    Record,
    ResponseStore,
    StoreUnavailable,
    item_ids,
)
from tollgate_orchestrator.types import STATE_MODEL, LlmRequest
from tollgate_orchestrator.validation import (
    FEATURE_TEXT_CHARS,
    FILE_ID_TOKENS,
    IMAGE_LOW_DETAIL_TOKENS,
    IMAGE_TOKENS,
    one_of,
)

if TYPE_CHECKING:
    from tollgate_orchestrator.wiring import Gateway

log = logging.getLogger(__name__)
T = TypeVar("T")

RESPONSES_PATH = "/v1/responses"
RESPONSE_PATH, INPUT_ITEMS_PATH = RESPONSE_PATHS
# ``LlmRequest.state`` keys: what ``before`` resolved, for ``after``/``watch``.
STATE_INPUT = "responses.input"  # every item this turn sent, as it went upstream
STATE_IDS = "responses.input_ids"  # their ids (listed, and referenced by)
STATE_NEW = "responses.new_items"  # what this turn added (references resolved)
STATE_PREVIOUS = "responses.previous_response_id"  # the id it continued, for echoing
# Set by the face (when it does): the catalog model that answered, from ``Meta.model``.
TERMINAL = (b"response.completed", b"response.incomplete")
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal", "summary_text"})
_JSON = "application/json"
_LIST_DEFAULT, _LIST_MAX = 20, 100
SETTLE_SECONDS = 1.0  # the longest a lookup that found nothing waits for saves under way


def previous_not_found(response_id: str) -> ApiError:
    return bad_request(
        "previous_response_id",
        f"Previous response with id '{response_id[:MAX_ID_CHARS]}' not found.",
        code="previous_response_not_found",
    )


def response_not_found(response_id: str) -> ApiError:
    return ApiError(
        404,
        f"Response with id '{response_id[:MAX_ID_CHARS]}' not found.",
        code="not_found",
        reason="not_found",
    )


def store_unavailable() -> ApiError:
    return ApiError(
        503,
        "The stored responses are unavailable; retry shortly.",
        type_=ERROR_TYPE_SERVER,
        code="responses_store_unavailable",
        headers={"retry-after": "1"},
    )


# --- pure helpers ------------------------------------------------------------------------


def as_items(value: object) -> list[dict[str, Any]]:
    """The ``input`` field as a list of items: a string is one user message."""
    if isinstance(value, str):
        return [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}
        ]
    if isinstance(value, list):
        return [i for i in value if isinstance(i, dict)]
    return []


def is_reference(item: dict[str, Any]) -> bool:
    """``{"type": "item_reference", "id": ...}``; the type may also be null or absent."""
    kind = item.get("type")
    return kind == "item_reference" or (kind is None and "role" not in item and "id" in item)


def json_tokens(value: Any) -> int:
    return len(orjson.dumps(value)) // 4


def _part(part: Any) -> tuple[str, int]:
    """(text, tokens beyond the text) of one content part."""
    if not isinstance(part, dict):
        return "", 0
    kind = part.get("type")
    if one_of(kind, _TEXT_PARTS) and isinstance(part.get("text"), str):
        return part["text"], 0
    if kind == "input_image":
        return "", IMAGE_LOW_DETAIL_TOKENS if part.get("detail") == "low" else IMAGE_TOKENS
    if kind == "input_file" and part.get("file_data") is None:
        return "", FILE_ID_TOKENS
    return "", json_tokens(part)


@dataclass(frozen=True, slots=True)
class Features:
    turns: int
    chars: int
    extra_tokens: int
    last_user_text: str
    images: bool = False  # an image anywhere in the history: only vision models fit


def features(items: list[dict[str, Any]]) -> Features:
    """The router's and the budget's view of an input list (``validation``'s estimate)."""
    chars = extra = 0
    last_user = ""
    images = False
    for item in items:
        images = images or has_image(item.get("content")) or has_image(item.get("output"))
        if item.get("type") == "function_call_output" and isinstance(item.get("output"), str):
            chars += len(item["output"])
            continue
        if item.get("type", "message") != "message" or "role" not in item:
            extra += json_tokens(item)
            continue
        content = item.get("content")
        parts = [_part(p) for p in content] if isinstance(content, list) else []
        text = content if isinstance(content, str) else " ".join(t for t, _ in parts if t)
        chars += len(text)
        extra += sum(n for _, n in parts)
        if item.get("role") == "user":
            last_user = text
    return Features(len(items), chars, extra, last_user[-FEATURE_TEXT_CHARS:], images)


def refeatured(
    req: LlmRequest, before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> LlmRequest:
    """``req`` whose input changed from ``before`` to ``after``: the features move by the
    difference, so what the dialect counted beyond the input (tools, instructions) stays."""
    b, a = features(before), features(after)
    return replace(
        req,
        turns=max(1, req.turns + a.turns - b.turns),
        prompt_chars=max(0, req.prompt_chars + a.chars - b.chars),
        est_extra_tokens=max(0, req.est_extra_tokens + a.extra_tokens - b.extra_tokens),
        last_user_text=req.last_user_text or a.last_user_text,
        has_images=req.has_images or a.images,
    )


def listed(item: dict[str, Any], item_id: str) -> dict[str, Any]:
    """An input item as ``input_items`` lists it (``ItemResource``): with its id, a
    message with typed content parts."""
    out = {**item, "id": item_id}
    if "type" not in out and "role" in out:
        out["type"] = "message"
    if out.get("type") != "message":
        return out
    content = out.get("content")
    if isinstance(content, str):
        kind = "output_text" if out.get("role") == "assistant" else "input_text"
        content = [{"type": kind, "text": content}]
    if out.get("role") == "assistant":  # an OutputMessage: its text parts in full
        out.setdefault("status", "completed")
        if isinstance(content, list):
            content = [
                {"annotations": [], "logprobs": [], **p}
                if isinstance(p, dict) and p.get("type") == "output_text"
                else p
                for p in content
            ]
    out["content"] = content
    return out


def page(
    items: list[dict[str, Any]], ids: list[str], limit: int, order: str, after: str | None
) -> dict[str, Any]:
    """OpenAI's ``ResponseItemList`` of one page. Raises 400 for an unknown ``after``."""
    rows = list(zip(items, ids, strict=False))
    if order == "desc":
        rows.reverse()
    start = 0
    if after is not None:
        at = next((n for n, (_, i) in enumerate(rows) if i == after), None)
        if at is None:
            raise bad_request("after", f"No input item with id '{after[:MAX_ID_CHARS]}'.")
        start = at + 1
    chosen = rows[start : start + limit]
    data = [listed(item, i) for item, i in chosen]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + limit < len(rows),
    }


def terminal_response(event: bytes) -> bytes | None:
    """The ``response`` object of a ``response.completed``/``response.incomplete`` SSE
    event (framed: ``event:``/``data:`` lines), else None."""
    for frame in event.split(b"\n\n"):
        data = b"\n".join(
            line[5:].lstrip(b" ") for line in frame.split(b"\n") if line.startswith(b"data:")
        )
        if not data or not any(t in data for t in TERMINAL):
            continue
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if (
            isinstance(parsed, dict)
            and parsed.get("type") in ("response.completed", "response.incomplete")
            and isinstance(parsed.get("response"), dict)
        ):
            return orjson.dumps(parsed["response"])
    return None


def echo_previous(body: bytes, previous: str) -> bytes:
    """A Response naming the response it continued: the upstream never saw the field (the
    session sent the whole conversation instead), so it answered null."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(parsed, dict):
        return body
    parsed["previous_response_id"] = previous
    return orjson.dumps(parsed)


def echo_previous_in_event(event: bytes, previous: str) -> bytes:
    """The same for a framed stream event that carries a ``response`` snapshot
    (created, in_progress, completed, incomplete, failed); other events pass as they are."""
    if b'"response":' not in event and b'"response": ' not in event:
        return event
    out = []
    for frame in event.split(b"\n\n"):
        lines = frame.split(b"\n")
        data = [i for i, line in enumerate(lines) if line.startswith(b"data:")]
        if len(data) == 1:
            try:
                parsed = orjson.loads(lines[data[0]][5:])
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and isinstance(parsed.get("response"), dict):
                parsed["response"]["previous_response_id"] = previous
                lines[data[0]] = b"data: " + orjson.dumps(parsed)
        out.append(b"\n".join(lines))
    return b"\n\n".join(out)


def _int_query(value: str | None, name: str, lo: int, hi: int, default: int) -> int:
    if value is None:
        return default
    if not value.strip().lstrip("-").isdigit() or not lo <= int(value) <= hi:
        raise bad_request(name, f"'{name}' must be an integer between {lo} and {hi}.")
    return int(value)


# --- the session ---------------------------------------------------------------------------


class ResponsesSession:
    """The ``Session`` of ``/v1/responses``, and its retrieval routes (``mount``)."""

    def __init__(
        self,
        store: ResponseStore,
        catalog: Catalog,
        on_drop: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self._on_drop = on_drop
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped: Counter[str] = Counter()  # answers not kept, by reason

    # --- before the pipeline ----------------------------------------------------------
    async def before(self, req: LlmRequest, tenant: str) -> LlmRequest:
        body = req.body
        sent = as_items(body.get("input"))
        prior: list[dict[str, Any]] = []
        prior_ids: list[str] = []
        prev: Record | None = None
        prev_id = body.get("previous_response_id")
        if prev_id is not None:
            if not isinstance(prev_id, str) or not prev_id:
                raise bad_request(
                    "previous_response_id", "'previous_response_id' must be a non-empty string."
                )
            prev = await self._get(tenant, prev_id)
            if prev is None:
                raise previous_not_found(prev_id)
            prior = [*prev.input_items, *prev.output]
            prior_ids = [*prev.input_ids, *prev.output_ids]
        new, new_ids, resolved = await self._resolve(tenant, sent)
        expanded = [*prior, *new]
        if prev is not None or resolved:
            body = {k: v for k, v in body.items() if k != "previous_response_id"}
            body["input"] = expanded
            req = refeatured(replace(req, body=body), sent, expanded)
        if prev is not None:
            req.state[STATE_PREVIOUS] = prev.id
            req = self._affinity(req, tenant, prev)
        req.state[STATE_INPUT] = expanded
        req.state[STATE_IDS] = [*prior_ids, *new_ids]
        req.state[STATE_NEW] = new
        return req

    async def _lookup(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` on the store; when it finds nothing (None, False) and saves are under
        way, once more after them (at most ``SETTLE_SECONDS``): a client that asks for what
        it was just answered must find it, though saving never delayed that answer."""
        try:
            got = await call()
            if (got is None or got is False) and self._tasks:
                await asyncio.wait(set(self._tasks), timeout=SETTLE_SECONDS)
                got = await call()
        except StoreUnavailable:
            raise store_unavailable() from None
        return got

    @staticmethod
    def _fits(some_id: str) -> bool:
        return 0 < len(some_id) <= MAX_ID_CHARS  # a longer one is no id we gave out

    async def _get(self, tenant: str, response_id: str) -> Record | None:
        if not self._fits(response_id):
            return None
        return await self._lookup(lambda: self.store.get(tenant, response_id))

    async def _delete(self, tenant: str, response_id: str) -> bool:
        if not self._fits(response_id):
            return False
        return await self._lookup(lambda: self.store.delete(tenant, response_id))

    async def _item(self, tenant: str, item_id: str) -> dict[str, Any] | None:
        if not self._fits(item_id):
            return None
        return await self._lookup(lambda: self.store.item(tenant, item_id))

    async def _resolve(
        self, tenant: str, sent: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[str], bool]:
        """(items, their ids, whether any was a reference): references replaced by the
        items of this tenant they name."""
        items: list[dict[str, Any]] = []
        ids = item_ids(sent)
        resolved = False
        for i, item in enumerate(sent):
            if not is_reference(item):
                items.append(item)
                continue
            ref = item.get("id")
            if not isinstance(ref, str) or not ref:
                raise bad_request(f"input[{i}].id", f"'input[{i}].id' must be a string.")
            found = await self._item(tenant, ref)
            if found is None:
                raise bad_request(
                    f"input[{i}].id", f"Item with id '{ref[:MAX_ID_CHARS]}' not found."
                )
            items.append(found)
            ids[i] = ref
            resolved = True
        return items, ids, resolved

    def _affinity(self, req: LlmRequest, tenant: str, prev: Record) -> LlmRequest:
        """``auto`` follows the model that answered the previous turn, when it may."""
        if req.model != AUTO:
            return req
        policy = self.catalog.policy
        entry = policy.models.get(prev.model)
        rules = policy.tenants.get(tenant)
        allowed = rules.allowed_models if rules is not None else None
        if (
            entry is None
            or entry.kind != "chat"
            or (allowed is not None and prev.model not in allowed)
        ):
            return req
        return replace(req, model=prev.model)

    # --- after the pipeline ------------------------------------------------------------
    @staticmethod
    def _keeps(req: LlmRequest) -> bool:
        return req.body.get("store") is not False

    def after(self, req: LlmRequest, tenant: str, body: bytes) -> bytes:
        previous = req.state.get(STATE_PREVIOUS)
        if isinstance(previous, str):
            body = echo_previous(body, previous)
        if self._keeps(req):
            self._spawn(self._save(req, tenant, body))
        return body

    async def watch(
        self, req: LlmRequest, tenant: str, events: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        keep = self._keeps(req)
        previous = req.state.get(STATE_PREVIOUS)
        try:
            async for event in events:
                if isinstance(previous, str):
                    event = echo_previous_in_event(event, previous)
                if keep and any(t in event for t in TERMINAL):
                    response = terminal_response(event)
                    if response is not None:
                        keep = False
                        self._spawn(self._save(req, tenant, response))  # before the client
                yield event
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    def _answered_by(self, req: LlmRequest, response: dict[str, Any]) -> tuple[str, str]:
        """(catalog model, provider) of the answer: the face's ``Meta.model`` when it put it
        in the state, else the Response's ``model`` read back through the catalog."""
        models = self.catalog.policy.models
        name = req.state.get(STATE_MODEL)
        if not isinstance(name, str) or name not in models:
            said = response.get("model")
            name = said if isinstance(said, str) and said in models else ""
            if not name and isinstance(said, str):
                name = next((n for n, e in models.items() if e.upstream_model == said), "")
        entry = models.get(name)
        return (name, entry.provider) if entry is not None else ("", "")

    def _record(self, req: LlmRequest, body: bytes) -> Record | None:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(parsed, dict):
            return None
        items = req.state.get(STATE_INPUT)
        ids = req.state.get(STATE_IDS)
        if not isinstance(items, list) or not isinstance(ids, list):  # ``before`` did not run
            items = as_items(req.body.get("input"))
            ids = item_ids(items)
        model, provider = self._answered_by(req, parsed)
        return Record.build(body, items, ids, model, provider, self._clock())

    async def _save(self, req: LlmRequest, tenant: str, body: bytes) -> None:
        record = self._record(req, body)
        if record is None:
            self._dropped("invalid")
            return
        try:
            if not await self.store.put(tenant, record):
                self._dropped("oversize")
        except Exception as exc:  # never the request's failure
            log.warning("stored response not kept: %s", type(exc).__name__)
            self._dropped("error")

    def _dropped(self, reason: str) -> None:
        self.dropped[reason] += 1
        if self._on_drop is not None:
            self._on_drop(reason)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the saves under way."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)

    async def close(self) -> None:
        await self.drain(1.0)
        await self.store.close()

    # --- the retrieval routes -----------------------------------------------------------
    def mount(self, app: FastAPI, gw: Gateway) -> None:
        """``GET``/``DELETE /v1/responses/{id}`` and ``GET .../input_items``, with the same
        keys as every route; another tenant's id is as unknown as one never stored."""

        async def record_of(request: Request, response_id: str) -> Record:
            tenant = gw.keys.tenant_for(request.headers.get("authorization"))
            rec = await self._get(tenant, response_id)
            if rec is None:
                raise response_not_found(response_id)
            return rec

        def refused(err: ApiError) -> Response:
            if err.reason:  # a refusal (auth, not found, invalid), not the store being down
                gw.metrics.rejected(err.reason)
            return error_response(err)

        @app.get(
            RESPONSE_PATH, response_class=Response, openapi_extra=_operation("The stored response.")
        )
        async def get_response(request: Request, response_id: str) -> Response:
            try:
                if request.query_params.get("stream", "").lower() in ("1", "true"):
                    raise bad_request(
                        "stream", "Streaming a stored response is not supported; get it whole."
                    )
                rec = await record_of(request, response_id)
            except ApiError as err:
                return refused(err)
            return Response(rec.response, media_type=_JSON)

        @app.delete(RESPONSE_PATH, response_class=Response, openapi_extra=_operation("Deleted."))
        async def delete_response(request: Request, response_id: str) -> Response:
            try:
                tenant = gw.keys.tenant_for(request.headers.get("authorization"))
                deleted = await self._delete(tenant, response_id)
                if not deleted:
                    raise response_not_found(response_id)
            except ApiError as err:
                return refused(err)
            body = {"id": response_id, "object": "response", "deleted": True}
            return Response(orjson.dumps(body), media_type=_JSON)

        @app.get(
            INPUT_ITEMS_PATH,
            response_class=Response,
            openapi_extra=_operation("The input items of a stored response, one page."),
        )
        async def input_items(request: Request, response_id: str) -> Response:
            q = request.query_params
            try:
                limit = _int_query(q.get("limit"), "limit", 1, _LIST_MAX, _LIST_DEFAULT)
                order = q.get("order", "desc")
                if order not in ("asc", "desc"):
                    raise bad_request("order", "'order' must be asc or desc.")
                rec = await record_of(request, response_id)
                listing = page(rec.input_items, rec.input_ids, limit, order, q.get("after"))
            except ApiError as err:
                return refused(err)
            return Response(orjson.dumps(listing), media_type=_JSON)


def _operation(description: str) -> dict[str, Any]:
    error = {"content": {_JSON: {"schema": ERROR_SCHEMA}}}
    return {
        "responses": {
            "200": {"description": description, "content": {_JSON: {"schema": {"type": "object"}}}},
            "401": {"description": "Missing or wrong API key.", **error},
            "404": {"description": "No such response for this key.", **error},
        }
    }
