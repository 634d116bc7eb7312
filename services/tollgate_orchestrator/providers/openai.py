"""The transport to every provider: one HTTP pool per provider, made at start (or when a
followed policy adds a provider), with what differs per vendor from ``providers/vendors``.

Each provider has the openai SDK's aiohttp transport (``DefaultAioHttpClient``: one
connection pool per provider) and its headers, from its vendor (auth, API version,
user agent: the official SDKs' own, see ``vendors``); a request is sent on that HTTP
client with the URL and headers built once, because the SDK's per-request builder
(options models, header merging, URL parsing) cost ~0.3 ms of CPU per call here, more
than the HTTP call itself (docs/benchmarks.md). No SDK retries: the orchestrator is the
only retry loop.

A provider whose policy entry takes a key (``api_key_env``, ``api_key_file``) but has
none here is *unavailable*: it gets no transport, the router is told to skip it, and an
attempt on it falls back at once (``NOT_CONFIGURED``). A one-vendor install thus serves
a mixed-vendor policy from the vendor it has.

Responses are taken raw (``httpx2.Response``) so the upstream JSON is forwarded byte for
byte, never parsed into pydantic models and dumped again; a non-2xx answer becomes the
same failure the SDK's status error did.

Nothing an upstream sends is trusted for size or time (L-13): a whole body over
``max_body_bytes`` and an SSE line over ``max_line_bytes`` are protocol failures, and
a stream is bounded in total duration and in time without a data payload
(``StreamStalled``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import httpx2
import openai
import orjson
from openai import DefaultAioHttpClient

from tollgate_common.config import ConfigError
from tollgate_common.policy import Policy
from tollgate_common.policy import Provider as ProviderEntry
from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects import WIRES, Translation, Wire
from tollgate_orchestrator.providers import anthropic, azure, gemini  # noqa: F401 (registrations)
from tollgate_orchestrator.providers.vendors import VENDORS, Vendor
from tollgate_orchestrator.retry import (
    CONNECTION,
    NOT_CONFIGURED,
    PROTOCOL,
    SERVER,
    TIMEOUT,
    AttemptFailed,
    Failure,
    classify_status,
    parse_retry_after,
)
from tollgate_orchestrator.sse import LineSplitter, LineTooLong, StreamStalled, data_of
from tollgate_orchestrator.types import API_OF_LABEL, LlmRequest, Target

log = logging.getLogger(__name__)

# A provider this deployment's policy does not list (pushed later, served by base_url).
DEFAULT_APIS = frozenset(API_OF_LABEL[a] for a in ProviderEntry.model_fields["apis"].default)
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def _status_failure(exc: openai.APIStatusError) -> Failure:
    headers: Mapping[str, str] = exc.response.headers if exc.response is not None else {}
    return Failure(
        classify_status(exc.status_code),
        status=exc.status_code,
        retry_after=parse_retry_after(headers),
        body=exc.body,
    )


def _refused(exc: BaseException) -> bool:
    """Whether a "timeout" is really a refused or reset connection underneath: the
    SDK's aiohttp transport reports every failed connect as ``httpx2.ConnectTimeout``."""
    cause = exc.__cause__ or exc.__context__
    for _ in range(8):  # a short chain; never follow a cycle
        if cause is None or isinstance(cause, TimeoutError):
            return False
        if isinstance(cause, ConnectionError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def failure_of(exc: BaseException) -> Failure:
    """Map what the SDK, httpx2 or our own deadline raised to a failure class."""
    if isinstance(exc, openai.APIStatusError):
        return _status_failure(exc)
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException | TimeoutError):
        return Failure(CONNECTION if _refused(exc) else TIMEOUT)
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError | ConnectionError):
        return Failure(CONNECTION)
    return Failure(PROTOCOL)


class UpstreamStream:
    """An upstream SSE response whose first content chunk has arrived; yields data payloads."""

    def __init__(self, response: httpx2.Response, first: list[bytes], rest: AsyncIterator[bytes]):
        self.response = response
        self.first = first  # payloads read before the first content chunk, that one included
        self._rest = rest

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._rest

    async def aclose(self) -> None:
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()
        await self.response.aclose()


@dataclass(frozen=True, slots=True)
class Bounds:
    """What an upstream answer may take: bytes of a whole body and of one SSE line, a
    stream's seconds in all and without a data payload."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_line_bytes: int = 1024 * 1024
    stream_max_seconds: float = 900.0
    stream_idle_seconds: float = 60.0


async def _payloads(response: httpx2.Response, bounds: Bounds) -> AsyncIterator[bytes]:
    splitter = LineSplitter(bounds.max_line_bytes)
    loop = asyncio.get_running_loop()
    end = loop.time() + bounds.stream_max_seconds
    idle = bounds.stream_idle_seconds
    quiet_until = loop.time() + idle
    chunks = response.aiter_bytes()
    while True:
        deadline = min(end, quiet_until)
        wait = asyncio.timeout_at(deadline)  # around the read only, never across a yield
        try:
            async with wait:
                data = await anext(chunks)
        except StopAsyncIteration:
            break
        except TimeoutError:
            if wait.expired():
                raise StreamStalled("duration" if deadline >= end else "idle") from None
            raise
        for line in splitter.feed(data):
            payload = data_of(line)
            if payload:
                quiet_until = loop.time() + idle
                yield payload
    tail = data_of(splitter.pending.rstrip(b"\r"))
    if tail:
        yield tail


async def read_capped(response: httpx2.Response, limit: int) -> bytes | None:
    """The whole body, or None once it passes ``limit`` bytes (the rest is not read)."""
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


async def _status_failure_of(response: httpx2.Response, limit: int) -> Failure:
    """A non-2xx answer as a failure, with the body the SDK's ``APIStatusError`` carries
    (the ``error`` object of an OpenAI error body, else the parsed or raw body)."""
    try:
        raw = await read_capped(response, limit) or b""
    finally:
        await response.aclose()
    body: object
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw.decode("utf-8", "replace")
    if isinstance(body, list) and len(body) == 1 and isinstance(body[0], dict):
        body = body[0]  # Gemini's compatible endpoint wraps its error object in a list
    if isinstance(body, dict) and "error" in body:
        body = body["error"]
    return Failure(
        classify_status(response.status_code),
        status=response.status_code,
        retry_after=parse_retry_after(response.headers),
        body=body,
    )


KEY_FILE_CHECK_SECONDS = 30.0  # how often a key file is looked at for a new token


class KeySource:
    """A provider's key: from its env var, or from a file that may change (an Entra token a
    sidecar refreshes), looked at no more than every ``KEY_FILE_CHECK_SECONDS``."""

    def __init__(self, entry: ProviderEntry) -> None:
        self.path = entry.api_key_file
        self._mtime = 0
        self._next = 0.0
        env = entry.api_key_env
        self.key = os.environ.get(env, "").strip() if env and not self.path else ""
        if self.path:
            self.changed()

    def changed(self) -> bool:
        """Whether the file holds a new key now (False without a file, or between checks)."""
        now = time.monotonic()
        if not self.path or now < self._next:
            return False
        self._next = now + KEY_FILE_CHECK_SECONDS
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime == self._mtime:
                return False
            with open(self.path, encoding="utf-8") as f:
                key = f.read(64 * 1024).strip()
        except OSError as exc:
            log.warning("provider key file unreadable: %s", exc.strerror)
            return False
        self._mtime = mtime
        if key == self.key:
            return False
        self.key = key
        return True


@dataclass(slots=True)
class Provider:
    """One provider's transport, and what every request to it reuses."""

    http: httpx2.AsyncClient  # the openai SDK's aiohttp transport: this provider's pool
    base_url: httpx2.URL
    headers: httpx2.Headers
    vendor: Vendor
    entry: ProviderEntry
    keys: KeySource | None = None  # None: the one shared key of ``upstream_base_url``
    urls: dict[tuple[str, str], httpx2.URL] = field(default_factory=dict)  # a join is ~50 µs

    def url(self, wire: Wire, upstream_model: str) -> httpx2.URL:
        k = (wire.api, upstream_model)
        u = self.urls.get(k)
        if u is None:
            path = self.vendor.path(self.entry, wire, upstream_model)
            if len(self.urls) > 4096:  # upstream models come from a pushed policy: bound it
                self.urls.clear()
            u = self.urls[k] = self.base_url.join(path)
        return u

    def refresh(self) -> None:
        """Take a key file's new token into the headers."""
        if self.keys is not None and self.keys.changed():
            self.headers = _headers(self.vendor, self.entry, self.keys.key)


def _headers(vendor: Vendor, entry: ProviderEntry, key: str) -> httpx2.Headers:
    return httpx2.Headers({**vendor.headers(entry, key), **_JSON_HEADERS})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_key_transport(field: str, base_url: str, insecure_hosts: frozenset[str]) -> None:
    """A key may travel over plain HTTP only to loopback or a host the operator allowed."""
    url = httpx2.URL(base_url)
    host = url.host or ""
    if url.scheme == "http" and not _is_loopback(host) and host not in insecure_hosts:
        raise ConfigError(
            f"{field}: {url.scheme}://{host} would carry a provider key in clear text; use "
            "https, or list the host in TOLLGATE_ORCHESTRATOR_UPSTREAM_INSECURE_HOSTS"
        )


class Upstreams:
    """The transports, one per provider, created once.

    Where a provider is and which key it gets is this deployment's own configuration
    (its policy file), never taken from a followed policy: a pushed document may add
    models and change prices, but it cannot send a provider's key somewhere else.

    A provider's key goes only to that provider's own base URL. With ``base_url``
    (one server for every provider: vLLM, the simulator) only ``base_url_key`` is
    sent, never a provider's key, which that server has no business seeing.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        base_url: str | None,
        connect_timeout: float,
        read_timeout: float,
        base_url_key: str = "",
        insecure_hosts: frozenset[str] = frozenset(),
        bounds: Bounds | None = None,
    ) -> None:
        self.bounds = bounds or Bounds()
        self._base_url = base_url
        self._base_url_key = base_url_key
        self._unknown: set[str] = set()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._clients: dict[str, Provider] = {}
        unavailable: set[str] = set()
        # The APIs each provider speaks natively, from this deployment's own policy too.
        self._apis = {
            name: frozenset(API_OF_LABEL[a] for a in p.apis) for name, p in policy.providers.items()
        }
        if base_url is not None and base_url_key:
            check_key_transport("upstream_base_url", base_url, insecure_hosts)
        for name, provider in policy.providers.items():
            vendor = VENDORS.get(provider.type)
            if vendor is None:  # the policy's Literal and VENDORS must agree; a test checks
                raise ConfigError(f"providers.{name}.type: no adapter for {provider.type!r}")
            if base_url is not None:
                self._clients[name] = self._make(vendor, provider, base_url, None, base_url_key)
                continue
            keys = KeySource(provider)
            if provider.needs_key and not keys.key:
                unavailable.add(name)
                where = provider.api_key_file or provider.api_key_env
                log.warning(
                    "provider has no key (%s is empty or unset); its models are skipped",
                    where,
                    extra={"provider": name[:64]},
                )
                continue
            if keys.key:
                check_key_transport(f"providers.{name}.base_url", provider.base_url, insecure_hosts)
            self._clients[name] = self._make(vendor, provider, provider.base_url, keys, keys.key)
        self._unavailable = frozenset(unavailable)

    def _make(
        self,
        vendor: Vendor,
        entry: ProviderEntry,
        base_url: str,
        keys: KeySource | None,
        key: str,
    ) -> Provider:
        url = httpx2.URL(base_url if base_url.endswith("/") else base_url + "/")
        return Provider(
            DefaultAioHttpClient(), url, _headers(vendor, entry, key), vendor, entry, keys
        )

    def apis(self, provider: str) -> frozenset[str]:
        return self._apis.get(provider, DEFAULT_APIS)

    def fixup(self, provider: str) -> Translation | None:
        c = self._clients.get(provider)
        return c.vendor.fixup() if c is not None else None

    def unavailable(self) -> frozenset[str]:
        """The providers this deployment has no key for: the router skips their models."""
        return self._unavailable

    def client(self, provider: str) -> Provider | None:
        c = self._clients.get(provider)
        if c is None and self._base_url is not None and len(self._clients) < 64:
            # A provider pushed in a newer router policy: with one base URL for all, serve it.
            entry = ProviderEntry(base_url=self._base_url)
            c = self._clients[provider] = self._make(
                VENDORS["openai"], entry, self._base_url, None, self._base_url_key
            )
        elif c is None and provider not in self._unknown and len(self._unknown) < 64:
            self._unknown.add(provider)
            log.warning(
                "provider has no transport configured here; its models fall back",
                extra={"provider": provider[:64]},
            )
        return c

    async def close(self) -> None:
        for c in self._clients.values():
            await c.http.aclose()

    def _timeout(self, budget: float, stream: bool) -> httpx2.Timeout:
        # A stream's reads wait for the next chunk: the idle timeout, not the deadline,
        # which only bounds the wait for the first chunk (asyncio.timeout around it).
        read = self.read_timeout if stream else min(self.read_timeout, budget)
        return httpx2.Timeout(read, connect=min(self.connect_timeout, budget))

    def _wire(self, req: LlmRequest) -> Wire:
        return WIRES[req.api]  # providers.dispatch sends only what the provider speaks

    async def _open(
        self, target: Target, req: LlmRequest, wire: Wire, budget: float
    ) -> httpx2.Response:
        if target.provider in self._unavailable:
            raise AttemptFailed(Failure(NOT_CONFIGURED))
        p = self.client(target.provider)
        if p is None:
            raise AttemptFailed(Failure(CONNECTION))
        p.refresh()
        payload = wire.payload(req, target.upstream_model)
        request = httpx2.Request(
            "POST",
            p.url(wire, target.upstream_model),
            headers=p.headers,
            content=payload,
            extensions={"timeout": self._timeout(budget, req.stream).as_dict()},
        )
        try:
            response: httpx2.Response = await p.http.send(request, stream=True)
        except (openai.APIError, httpx2.HTTPError, OSError) as exc:
            raise AttemptFailed(failure_of(exc)) from exc
        if not response.is_success:
            raise AttemptFailed(await _status_failure_of(response, self.bounds.max_body_bytes))
        return response

    async def complete(self, target: Target, req: LlmRequest, budget: float) -> tuple[bytes, Usage]:
        """One non-streaming attempt within ``budget`` seconds: (raw body, its usage)."""
        wire = self._wire(req)
        try:
            async with asyncio.timeout(budget):
                response = await self._open(target, req, wire, budget)
                try:
                    raw = await read_capped(response, self.bounds.max_body_bytes)
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            raise AttemptFailed(Failure(TIMEOUT)) from exc
        except (httpx2.HTTPError, OSError) as exc:
            raise AttemptFailed(failure_of(exc)) from exc
        if raw is None:
            log.warning("upstream body over the cap", extra={"provider": target.provider})
            raise AttemptFailed(Failure(PROTOCOL))
        usage = wire.answer(raw)
        if usage is None:
            raise AttemptFailed(Failure(PROTOCOL))
        return raw, usage

    async def stream(self, target: Target, req: LlmRequest, budget: float) -> UpstreamStream:
        """Open a stream and wait for its first chunk, all within ``budget`` seconds.

        Until that chunk nothing has reached the client, so any failure here may
        be retried or fall back.
        """
        wire = self._wire(req)
        response: httpx2.Response | None = None
        rest: AsyncIterator[bytes] | None = None
        try:
            async with asyncio.timeout(budget):
                response = await self._open(target, req, wire, budget)
                rest = _payloads(response, self.bounds)
                first: list[bytes] = []
                async for p in rest:
                    end = wire.end_of(p)
                    if end is not None:
                        raise AttemptFailed(Failure(SERVER if end == "error" else PROTOCOL))
                    first.append(p)
                    if wire.first_content(p):
                        break
                else:
                    raise AttemptFailed(Failure(PROTOCOL))  # ended before any chunk
                return UpstreamStream(response, first, rest)
        except BaseException as exc:
            if rest is not None:
                await rest.aclose()  # type: ignore[attr-defined]
            if response is not None:
                await response.aclose()
            if isinstance(exc, AttemptFailed | asyncio.CancelledError):
                raise
            if isinstance(exc, TimeoutError | StreamStalled):
                raise AttemptFailed(Failure(TIMEOUT)) from exc
            if isinstance(exc, LineTooLong):
                raise AttemptFailed(Failure(PROTOCOL)) from exc
            if isinstance(exc, httpx2.HTTPError | OSError):
                raise AttemptFailed(failure_of(exc)) from exc
            raise
