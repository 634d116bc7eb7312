"""The few Kubernetes API calls the operator makes besides kopf's own.

They go through kopf's API client (``kopf._cogs.clients.api``, pinned with kopf) so they
use the credentials kopf logged in with, re-authenticate on 401 and retry on 5xx, and
need no second Kubernetes client library. Every write is skipped when the object already
has the desired content, so a resume after a restart writes nothing.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any

import kopf
from kopf._cogs.clients import api, errors

log = logging.getLogger(__name__)

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
BACKOFFS = (0.5, 1.0)  # a handler retries with its own backoff; keep each call short

NotFound = errors.APINotFoundError
APIError = errors.APIError


def collection_url(api_version: str, plural: str, namespace: str) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


def object_url(api_version: str, plural: str, namespace: str, name: str) -> str:
    return f"{collection_url(api_version, plural, namespace)}/{urllib.parse.quote(name)}"


def _needs_update(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that makes ``existing`` carry ``desired``'s labels, annotations,
    ownerReferences and top-level content; empty when nothing differs."""
    patch: dict[str, Any] = {}
    meta_now = existing.get("metadata", {})
    meta_patch: dict[str, Any] = {}
    for key in ("labels", "annotations"):
        want = desired.get("metadata", {}).get(key)
        have = meta_now.get(key) or {}
        if want is not None and any(have.get(k) != v for k, v in want.items()):
            meta_patch[key] = dict(want)
    refs = desired.get("metadata", {}).get("ownerReferences")
    if refs and meta_now.get("ownerReferences") != refs:
        meta_patch["ownerReferences"] = refs
    if meta_patch:
        patch["metadata"] = meta_patch
    for key, value in desired.items():
        if key not in ("apiVersion", "kind", "metadata") and existing.get(key) != value:
            patch[key] = value
    return patch


class Kube:
    """Thin async calls; ``settings`` are kopf's, for its timeouts."""

    def __init__(self, settings: kopf.OperatorSettings) -> None:
        self._settings = settings

    async def _call(self, method: str, url: str, payload: object | None = None) -> Any:
        headers = MERGE_PATCH if method == "patch" else None
        response = await api.request(
            method,
            url,
            payload=payload,
            headers=headers,
            settings=self._settings,
            backoffs=BACKOFFS,
            logger=log,
        )
        async with response:
            return await response.json()

    async def get(self, api_version: str, plural: str, namespace: str, name: str) -> Any:
        return await self._call("get", object_url(api_version, plural, namespace, name))

    async def list(
        self, api_version: str, plural: str, namespace: str, label_selector: str = ""
    ) -> list[Mapping[str, Any]]:
        url = collection_url(api_version, plural, namespace)
        if label_selector:
            url += "?" + urllib.parse.urlencode({"labelSelector": label_selector})
        items = (await self._call("get", url)).get("items") or []
        return list(items)

    async def apply(self, plural: str, desired: Mapping[str, Any]) -> str:
        """Create the object, or patch it if it differs. Returns created|patched|unchanged."""
        meta = desired["metadata"]
        av, ns, name = desired["apiVersion"], meta["namespace"], meta["name"]
        try:
            existing = await self.get(av, plural, ns, name)
        except NotFound:
            await self._call("post", collection_url(av, plural, ns), dict(desired))
            return "created"
        patch = _needs_update(existing, desired)
        if not patch:
            return "unchanged"
        await self._call("patch", object_url(av, plural, ns, name), patch)
        return "patched"

    async def delete(self, api_version: str, plural: str, namespace: str, name: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            await self._call("delete", object_url(api_version, plural, namespace, name))
        except NotFound:
            return False
        return True

    async def set_configmap_key(
        self,
        namespace: str,
        name: str,
        key: str,
        value: str | None,
        annotations: Mapping[str, str] | None = None,
    ) -> str:
        """Set (or with ``None`` remove) one key of a ConfigMap, creating it when missing.
        Returns created|patched|unchanged."""
        try:
            existing = await self.get("v1", "configmaps", namespace, name)
        except NotFound:
            if value is None:
                return "unchanged"
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "tollgate-operator"},
                    "annotations": dict(annotations or {}),
                },
                "data": {key: value},
            }
            await self._call("post", collection_url("v1", "configmaps", namespace), body)
            return "created"
        if (existing.get("data") or {}).get(key) == value:
            return "unchanged"
        patch: dict[str, Any] = {"data": {key: value}}
        if annotations:
            patch["metadata"] = {"annotations": dict(annotations)}
        await self._call("patch", object_url("v1", "configmaps", namespace, name), patch)
        return "patched"
