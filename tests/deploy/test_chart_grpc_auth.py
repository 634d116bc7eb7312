"""The control plane is authenticated in every rendered install (H-1..H-3, M-6): each gRPC
server gets the callers' token digests (or, with mTLS, a client CA), each caller only its
own token (or certificate), the tokens are random and kept across upgrades, and TLS
values mount the certificates the settings name."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    Manifest,
    by_name,
    helm,
    of_kind,
    render,
    render_args,
)
from tests.deploy.conftest import VALUE_SETS
from tests.deploy.fake_kube import fake_kube

SERVERS = ("router", "cache", "orchestrator")
CLIENTS = ("orchestrator", "operator")
PREFIX = {c: f"TOLLGATE_{c.upper()}_" for c in ("router", "cache", "orchestrator", "operator")}
TLS_ON = ["grpc.tls.enabled=true", "grpc.tls.secretName=tollgate-grpc-tls"]


def _pod(docs: list[Manifest], comp: str) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = by_name(docs, "Deployment", f"-{comp}")["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _file(spec: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret name, key) that the file at `path` comes from; fails if nothing mounts it."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    for m in container["volumeMounts"]:
        if path.startswith(m["mountPath"] + "/"):
            assert m.get("readOnly") is True, m
            secret = volumes[m["name"]]["secret"]
            rel = path[len(m["mountPath"]) + 1 :]
            keys = [i["key"] for i in secret["items"] if i["path"] == rel]
            assert keys, f"{path}: volume {m['name']} has no item {rel}"
            return secret["secretName"], keys[0]
    raise AssertionError(f"{path} is on no mounted volume")


def _is_mtls(name: str) -> bool:
    values: dict[str, Any] = {}
    for f in VALUE_SETS[name]:
        values.update(yaml.safe_load(f.read_text()) or {})
    return bool(values.get("grpc", {}).get("auth") == "mtls")


def _secret_data(docs: list[Manifest], suffix: str) -> dict[str, str]:
    secret = by_name(docs, "Secret", suffix)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_no_grpc_server_without_caller_identities(
    renders: dict[str, list[Manifest]], name: str
) -> None:
    """Every gRPC server is told whom to accept: the callers file (tokens) or a client CA
    (mTLS), mounted where its setting points. None is opted out or has reflection on."""
    docs = renders[name]
    for comp in SERVERS:
        spec, c = _pod(docs, comp)
        env, p = _env(c), PREFIX[comp]
        assert f"{p}GRPC_ALLOW_UNAUTHENTICATED" not in env, comp
        assert env.get(f"{p}GRPC_REFLECTION", "false") == "false", comp
        if _is_mtls(name):
            assert f"{p}GRPC_CALLERS_FILE" not in env
            for field, key in (("CERT", "tls.crt"), ("KEY", "tls.key"), ("CLIENT_CA", "ca.crt")):
                assert _file(spec, c, env[f"{p}GRPC_TLS_{field}"])[1] == key, (comp, field)
        else:
            secret, key = _file(spec, c, env[f"{p}GRPC_CALLERS_FILE"])
            assert (secret, key) == (
                by_name(docs, "Secret", "-grpc-callers")["metadata"]["name"],
                "callers.yaml",
            ), comp


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_caller_has_its_own_identity_and_no_other(
    renders: dict[str, list[Manifest]], name: str
) -> None:
    """The orchestrator's pod holds only the orchestrator's token, the operator's only the
    operator's; router, cache and simulator hold none."""
    docs = renders[name]
    for dep in of_kind(docs, "Deployment"):
        spec = dep["spec"]["template"]["spec"]
        comp = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        c = spec["containers"][0]
        env = _env(c)
        token_vols = [
            v
            for v in spec["volumes"]
            if v.get("secret", {}).get("secretName", "").endswith("-grpc-tokens")
        ]
        if comp not in CLIENTS or _is_mtls(name):
            assert token_vols == [], comp
            assert not any(k.endswith("GRPC_TOKEN_FILE") for k in env), comp
            continue
        assert len(token_vols) == 1
        assert token_vols[0]["secret"]["items"] == [{"key": comp, "path": "token"}], comp
        assert _file(spec, c, env[f"{PREFIX[comp]}GRPC_TOKEN_FILE"])[1] == comp
    if _is_mtls(name):  # no token Secrets: only the cache signing key's
        assert all(
            d["metadata"]["name"].endswith("-cache-signing") for d in of_kind(docs, "Secret")
        )
        secrets = {
            comp: _file(
                *_pod(docs, comp), _env(_pod(docs, comp)[1])[f"{PREFIX[comp]}PEER_TLS_CERT"]
            )[0]
            for comp in CLIENTS
        }
        assert secrets["orchestrator"] != secrets["operator"]  # one CN per caller


def test_tokens_are_random_and_the_callers_file_holds_their_digests() -> None:
    first, second = render(), render()
    tokens = _secret_data(first, "-grpc-tokens")
    assert set(tokens) == {"orchestrator", "operator"}
    for token in tokens.values():
        assert re.fullmatch(r"[A-Za-z0-9]{48}", token)
    assert tokens["orchestrator"] != tokens["operator"]
    callers = yaml.safe_load(_secret_data(first, "-grpc-callers")["callers.yaml"])
    assert callers == {k: hashlib.sha256(v.encode()).hexdigest() for k, v in tokens.items()}
    # No token ships with the chart: without a live Secret to look up, every render is new.
    assert _secret_data(second, "-grpc-tokens") != tokens
    # A new token rolls the pods that use it.
    for comp in (*SERVERS, "operator"):
        ann = by_name(first, "Deployment", f"-{comp}")["spec"]["template"]["metadata"]
        other = by_name(second, "Deployment", f"-{comp}")["spec"]["template"]["metadata"]
        assert (
            ann["annotations"]["checksum/grpc-tokens"]
            != other["annotations"]["checksum/grpc-tokens"]
        )


def test_tokens_are_read_back_from_the_live_secret() -> None:
    """`helm template` cannot look up, so this checks the template: the tokens come from the
    live Secret of the same name when it exists, and are generated only when it does not."""
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    define = helpers.split('{{- define "tollgate.grpcTokens" -}}', 1)[1].split("{{- end }}\n")[0]
    assert (
        'lookup "v1" "Secret" .Release.Namespace (include "tollgate.grpcTokensSecret" .)' in define
    )
    assert "b64dec" in define and "randAlphaNum 48" in define
    assert "empty $old | ternary (randAlphaNum 48) $old" in define
    secret_tpl = (CHART / "templates" / "secret-grpc.yaml").read_text()
    assert 'include "tollgate.grpcTokens"' in secret_tpl and "randAlpha" not in secret_tpl


def test_existing_token_secrets_are_referenced_not_generated() -> None:
    docs = render(
        sets=["grpc.tokens.existingSecret=my-tokens", "grpc.callers.existingSecret=my-callers"]
    )
    assert [d["metadata"]["name"] for d in of_kind(docs, "Secret")] == [
        f"{RELEASE}-tollgate-cache-signing"
    ]
    for comp in SERVERS:
        spec, c = _pod(docs, comp)
        assert _file(spec, c, _env(c)[f"{PREFIX[comp]}GRPC_CALLERS_FILE"]) == (
            "my-callers",
            "callers.yaml",
        )
    for comp in CLIENTS:
        spec, c = _pod(docs, comp)
        assert _file(spec, c, _env(c)[f"{PREFIX[comp]}GRPC_TOKEN_FILE"]) == ("my-tokens", comp)
        assert (
            "checksum/grpc-tokens"
            not in by_name(docs, "Deployment", f"-{comp}")["spec"]["template"]["metadata"][
                "annotations"
            ]
        )


def test_tls_with_tokens_mounts_server_certificates_and_the_ca() -> None:
    """M-6: grpc.tls.enabled serves TLS (cert and key, no client CA with tokens) and the
    callers verify it with ca.crt; the operator, a caller only, gets no private key."""
    docs = render(sets=TLS_ON)
    for comp in SERVERS:
        spec, c = _pod(docs, comp)
        env, p = _env(c), PREFIX[comp]
        assert _file(spec, c, env[f"{p}GRPC_TLS_CERT"]) == ("tollgate-grpc-tls", "tls.crt")
        assert _file(spec, c, env[f"{p}GRPC_TLS_KEY"]) == ("tollgate-grpc-tls", "tls.key")
        assert f"{p}GRPC_TLS_CLIENT_CA" not in env
        assert f"{p}GRPC_CALLERS_FILE" in env
    for comp in CLIENTS:
        spec, c = _pod(docs, comp)
        env, p = _env(c), PREFIX[comp]
        assert _file(spec, c, env[f"{p}PEER_TLS_CA"]) == ("tollgate-grpc-tls", "ca.crt")
        assert f"{p}PEER_TLS_CERT" not in env and f"{p}PEER_TLS_KEY" not in env
        assert f"{p}GRPC_TOKEN_FILE" in env
    spec, _ = _pod(docs, "operator")
    tls = next(v for v in spec["volumes"] if v["name"] == "grpc-tls")
    assert [i["key"] for i in tls["secret"]["items"]] == ["ca.crt"]
    sim = render(sets=[*TLS_ON, "services.simulator.enabled=true"])
    spec, c = _pod(sim, "simulator")
    assert not [v for v in spec["volumes"] if v["name"].startswith("grpc")]


def test_mtls_gives_each_caller_its_certificate(renders: dict[str, list[Manifest]]) -> None:
    docs = renders["tls-values"]
    for comp, secret in (
        ("orchestrator", "tollgate-orchestrator-tls"),
        ("operator", "tollgate-operator-tls"),
    ):
        spec, c = _pod(docs, comp)
        env, p = _env(c), PREFIX[comp]
        assert _file(spec, c, env[f"{p}PEER_TLS_CERT"]) == (secret, "tls.crt")
        assert _file(spec, c, env[f"{p}PEER_TLS_KEY"]) == (secret, "tls.key")
        assert _file(spec, c, env[f"{p}PEER_TLS_CA"]) == (secret, "ca.crt")
    for comp in ("router", "cache"):
        spec, c = _pod(docs, comp)
        assert _file(spec, c, _env(c)[f"{PREFIX[comp]}GRPC_TLS_CERT"])[0] == "tollgate-grpc-tls"


BAD: dict[str, tuple[list[str], str]] = {
    "mtls without tls": (["grpc.auth=mtls"], "grpc.auth=mtls needs grpc.tls.enabled=true"),
    "tls without a certificate": (
        ["grpc.tls.enabled=true"],
        "grpc.tls.enabled needs grpc.tls.secretName or grpc.tls.componentSecrets.",
    ),
    "mtls with one certificate for both callers": (
        ["grpc.auth=mtls", *TLS_ON],
        "grpc.auth=mtls needs distinct grpc.tls.componentSecrets.orchestrator and .operator",
    ),
    "tokens without their digests": (
        ["grpc.tokens.existingSecret=my-tokens"],
        "grpc.tokens.existingSecret needs grpc.callers.existingSecret",
    ),
    "digests without their tokens": (
        ["grpc.callers.existingSecret=my-callers"],
        "grpc.callers.existingSecret needs grpc.tokens.existingSecret",
    ),
    "unknown auth": (["grpc.auth=none"], "/grpc/auth"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_values_that_would_leave_the_control_plane_open_fail(case: str) -> None:
    sets, message = BAD[case]
    out = helm(*render_args(sets=sets), check=False)
    assert out.returncode != 0, f"{case}: Helm rendered it"
    assert message in out.stderr, out.stderr


def _server_render(kubeconfig: Path, sets: Sequence[str] = ()) -> list[Manifest]:
    args = [*render_args(sets=sets, api_versions=()), "--dry-run=server"]
    args += ["--disable-openapi-validation"]
    out = helm(*args, kubeconfig=kubeconfig)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _live_tokens(tokens: dict[str, str]) -> dict[str, Any]:
    """The tokens Secret as a previous install of release RELEASE left it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{RELEASE}-tollgate-grpc-tokens",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": RELEASE,
                "meta.helm.sh/release-namespace": NAMESPACE,
            },
        },
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in tokens.items()},
    }


def test_upgrade_keeps_the_live_tokens(tmp_path: Path) -> None:
    """What `helm upgrade` sees: with the tokens Secret already in the cluster, the render
    (lookup against a fake API server) keeps its values, and the digests match them."""
    live = {"orchestrator": "o" * 48, "operator": "p" * 48}
    with fake_kube([_live_tokens(live)], tmp_path) as kubeconfig:
        first, second = _server_render(kubeconfig), _server_render(kubeconfig)
    for docs in (first, second):
        assert _secret_data(docs, "-grpc-tokens") == live
        callers = yaml.safe_load(_secret_data(docs, "-grpc-callers")["callers.yaml"])
        assert callers == {k: hashlib.sha256(v.encode()).hexdigest() for k, v in live.items()}
    ann = [
        by_name(d, "Deployment", "-router")["spec"]["template"]["metadata"]["annotations"]
        for d in (first, second)
    ]
    assert ann[0]["checksum/grpc-tokens"] == ann[1]["checksum/grpc-tokens"]  # no rollout


def test_deleting_the_tokens_secret_rotates_them(tmp_path: Path) -> None:
    """The rotation procedure (docs/security.md): without the live Secret, an upgrade makes
    new tokens, and a partly filled Secret gets its missing caller filled in."""
    with fake_kube([], tmp_path) as kubeconfig:
        a, b = _server_render(kubeconfig), _server_render(kubeconfig)
    assert _secret_data(a, "-grpc-tokens") != _secret_data(b, "-grpc-tokens")
    with fake_kube([_live_tokens({"operator": "q" * 48})], tmp_path) as kubeconfig:
        tokens = _secret_data(_server_render(kubeconfig), "-grpc-tokens")
    assert tokens["operator"] == "q" * 48
    assert re.fullmatch(r"[A-Za-z0-9]{48}", tokens["orchestrator"])


def test_only_the_orchestrators_hold_the_cache_signing_key() -> None:
    """H-2: the key that makes cache entries trustworthy is in no other pod."""
    docs = render()
    spec, container = _pod(docs, "orchestrator")
    path = _env(container)["TOLLGATE_ORCHESTRATOR_CACHE_SIGNING_KEY_FILE"]
    secret, key = _file(spec, container, path)
    data = by_name(docs, "Secret", "-cache-signing")["data"]
    assert secret.endswith("-cache-signing") and len(base64.b64decode(data[key])) >= 32
    for comp in ("router", "cache", "operator"):
        other, _ = _pod(docs, comp)
        names = {v.get("secret", {}).get("secretName") for v in other.get("volumes", [])}
        assert secret not in names, comp
