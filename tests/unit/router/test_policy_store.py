"""PolicyStore: start-up, file reloads, the override file, the RPC path, and the
policy_info metric keeping exactly one series."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tollgate_common.metrics import create_families
from tollgate_common.policy import DEFAULT_POLICY_FILE, PRICE_TABLE_FILE, PolicyError
from tollgate_router.metrics import RouterMetrics
from tollgate_router.policy_store import PolicyState, PolicyStore

DEFAULT = DEFAULT_POLICY_FILE.read_text()


def with_version(version: str, text: str = DEFAULT) -> str:
    return text.replace('version: "default-2026-12-03"', f'version: "{version}"')


BAD = DEFAULT.replace("default_model: gpt-4o-mini", "default_model: nope")


class Recorder:
    def __init__(self) -> None:
        self.reloads: list[tuple[str, str]] = []
        self.changes: list[str] = []

    def reloaded(self, trigger: str, result: str) -> None:
        self.reloads.append((trigger, result))

    def changed(self, old: PolicyState | None, new: PolicyState) -> None:
        self.changes.append(new.version)


def make(
    tmp_path: Path, base: str | None = DEFAULT, override: str | None = None
) -> tuple[PolicyStore, Recorder, Path, Path]:
    base_path = tmp_path / "policy.yaml"
    over_path = tmp_path / "override" / "policy.yaml"
    over_path.parent.mkdir()
    if base is not None:
        base_path.write_text(base)
    if override is not None:
        over_path.write_text(override)
    rec = Recorder()
    store = PolicyStore(
        policy_file=base_path,
        override_file=over_path,
        price_table_file=PRICE_TABLE_FILE,
        listener=rec,
    )
    return store, rec, base_path, over_path


def test_shipped_default_when_no_file_is_given() -> None:
    store = PolicyStore(policy_file=None, override_file=None, price_table_file=PRICE_TABLE_FILE)
    assert store.current.source == "default"
    assert store.current.version == "default-2026-12-03"
    assert store.current.yaml == DEFAULT


def test_bad_base_file_at_start_is_an_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="default_model"):
        make(tmp_path, base=BAD)
    with pytest.raises(PolicyError, match="cannot read"):
        PolicyStore(
            policy_file=tmp_path / "missing.yaml",
            override_file=None,
            price_table_file=PRICE_TABLE_FILE,
        )


def test_file_change_reloads_and_bad_file_keeps_the_old_policy(tmp_path: Path) -> None:
    store, rec, base, _ = make(tmp_path)
    assert rec.reloads == [("startup", "success")]
    store.poll()
    assert rec.reloads == [("startup", "success")]  # nothing changed, nothing counted

    base.write_text(BAD)
    store.poll()
    assert store.current.version == "default-2026-12-03"
    assert rec.reloads[-1] == ("file", "failure")
    store.poll()  # the same bad content is reported once, not every poll
    assert rec.reloads.count(("file", "failure")) == 1

    base.write_text(with_version("v2"))
    store.poll()
    assert store.current.version == "v2"
    assert store.current.source == f"file:{base}"
    assert rec.reloads[-1] == ("file", "success")


def test_override_wins_at_start_and_its_removal_restores_the_base(tmp_path: Path) -> None:
    store, rec, _, over = make(tmp_path, override=with_version("pushed"))
    assert store.current.version == "pushed"
    assert store.current.source == f"file:{over}"
    over.unlink()
    store.poll()
    assert store.current.version == "default-2026-12-03"
    assert rec.changes == ["default-2026-12-03", "pushed", "default-2026-12-03"]


def test_bad_override_at_start_keeps_the_base(tmp_path: Path) -> None:
    store, rec, _, over = make(tmp_path, override=BAD)
    assert store.current.version == "default-2026-12-03"
    assert ("file", "failure") in rec.reloads
    over.write_text(with_version("fixed"))
    store.poll()
    assert store.current.version == "fixed"


def test_missing_override_file_is_normal(tmp_path: Path) -> None:
    store, rec, _, _ = make(tmp_path)
    store.poll()
    assert store.current.version == "default-2026-12-03"
    assert rec.reloads == [("startup", "success")]


def test_rpc_update_bad_keeps_old_same_is_unchanged_latest_wins(tmp_path: Path) -> None:
    store, rec, base, _ = make(tmp_path)
    with pytest.raises(PolicyError, match=r"routes\.code\.large\[0\]"):
        store.update(
            DEFAULT.replace("[claude-sonnet-4-5, gpt-5,", "[gpt-9, gpt-5,"), "operator:ns/p"
        )
    with pytest.raises(PolicyError, match="mapping"):
        store.update("", "operator:ns/p")
    assert store.current.version == "default-2026-12-03"
    assert rec.reloads[-1] == ("rpc", "failure")

    state, changed = store.update(DEFAULT, "operator:ns/p")
    assert not changed
    assert state.source == f"file:{base}"

    state, changed = store.update(with_version("rpc-1"), "operator:ns/p")
    assert changed
    assert (state.version, state.source) == ("rpc-1", "operator:ns/p")
    assert store.current is state

    base.write_text(with_version("file-2"))  # a later file change wins over the RPC
    store.poll()
    assert store.current.version == "file-2"


def test_rpc_refuses_oversized_documents(tmp_path: Path) -> None:
    store, _, _, _ = make(tmp_path)
    with pytest.raises(PolicyError, match="policy_yaml: larger than"):
        store.update("#" * (2 * 1024 * 1024), "x")


def test_policy_info_keeps_exactly_one_series(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = RouterMetrics(create_families("router", registry))
    base = tmp_path / "p.yaml"
    base.write_text(DEFAULT)
    store = PolicyStore(
        policy_file=base, override_file=None, price_table_file=PRICE_TABLE_FILE, listener=metrics
    )
    store.update(with_version("v2"), "operator:ns/p")
    store.update(with_version("v3"), "operator:ns/p")

    def info_series() -> list[dict[str, str]]:
        return [
            s.labels
            for fam in registry.collect()
            if fam.name == "tollgate_router_policy_info"
            for s in fam.samples
        ]

    assert info_series() == [{"version": "v3", "source": "operator:ns/p"}]
    assert (
        registry.get_sample_value(
            "tollgate_router_policy_reloads_total", {"trigger": "rpc", "result": "success"}
        )
        == 2
    )
    last = registry.get_sample_value("tollgate_router_policy_last_reload_timestamp_seconds")
    assert last is not None and last > 1_700_000_000
