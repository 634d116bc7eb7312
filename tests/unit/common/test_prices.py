"""The dated per-provider price tables, the price check at policy load, the
``tollgate_price_table_info`` series and the shipped mixed-vendor default policy."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tollgate_common.metrics import create_families
from tollgate_common.policy import (
    DEFAULT_POLICY_FILE,
    PRICE_FIELDS,
    PRICE_TABLE_FILE,
    Policy,
    PolicyError,
    cost_usd,
    load_policy,
    load_price_table,
    parse_policy,
)
from tollgate_common.prices import DATA_DIR, Prices, load_prices
from tollgate_orchestrator.metrics import OrchestratorMetrics
from tollgate_router.metrics import RouterMetrics
from tollgate_router.policy_store import PolicyState

SHIPPED = sorted(DATA_DIR.glob("prices-*.yaml"))


def _table(path: Path, provider: str, as_of: str, models: dict[str, object]) -> Path:
    doc = {"provider": provider, "as_of": as_of, "source": "https://x", "currency": "USD"}
    path.write_text(yaml.safe_dump({**doc, "models": models}))
    return path


def _policy(models: dict[str, object], providers: Mapping[str, object] | None = None) -> str:
    first = next(iter(models))
    doc = {
        "providers": providers or {"p": {"base_url": "https://p.example/v1"}},
        "models": models,
        "default_model": first,
        "baseline_model": first,
        "routes": {i: {t: [first] for t in ("small", "medium", "large")} for i in _INTENTS},
    }
    return yaml.safe_dump(doc)


_INTENTS = ("code", "math", "summarization", "extraction", "translation", "creative", "chat")


def test_each_shipped_table_says_whose_prices_when_and_from_where() -> None:
    assert [p.name for p in SHIPPED] == [
        "prices-anthropic.yaml",
        "prices-gemini.yaml",
        "prices-openai.yaml",
    ]
    for path in SHIPPED:
        doc = yaml.safe_load(path.read_text())
        assert path.name == f"prices-{doc['provider']}.yaml"
        assert doc["currency"] == "USD"
        assert str(doc["source"]).startswith("https://")
        assert "not fetched" in path.read_text()  # the honest note on where figures came from
    prices = load_prices()
    assert prices.versions == (
        ("anthropic", "2025-10-15"),
        ("gemini", "2025-07-22"),
        ("openai", "2025-08-07"),
    )


def test_every_shipped_model_is_priced_by_its_own_vendors_table() -> None:
    prices = load_prices()
    policy = load_policy()
    assert policy.price_tables == prices.versions
    for name, m in policy.models.items():
        table = prices.table_of(name)
        assert table is not None, name
        assert table.provider == policy.providers[m.provider].type, name


def test_anthropic_cache_reads_and_both_cache_writes_have_their_own_price() -> None:
    sonnet = load_policy().models["claude-sonnet-4-5"]
    # 1M prompt tokens: 100k read from cache, 300k written (200k of them for an hour).
    cost = cost_usd(sonnet, 1_000_000, 10_000, 100_000, 300_000, 200_000)
    expected = 0.6 * 3.00 + 0.1 * 0.30 + 0.1 * 3.75 + 0.2 * 6.00 + 0.01 * 15.00
    assert cost == pytest.approx(expected, abs=1e-9)


def test_a_model_priced_by_two_tables_names_both_files(tmp_path: Path) -> None:
    a = _table(tmp_path / "prices-a.yaml", "a", "2025-01-01", {"m": {"input_per_mtok": 1}})
    b = _table(tmp_path / "prices-b.yaml", "b", "2025-02-01", {"m": {"input_per_mtok": 2}})
    with pytest.raises(PolicyError, match=r"models\.m: priced in both") as err:
        load_price_table(tmp_path)
    assert str(a) in str(err.value) and str(b) in str(err.value)


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"provider": "x", "source": "s", "models": {}}, "as_of: required"),
        ({"provider": "x", "as_of": "last week", "models": {}}, "as_of: 'last week' is not"),
        ({"as_of": "2025-01-01", "models": {}}, "provider: required"),
        ({"provider": "X Y", "as_of": "2025-01-01"}, "provider: 'X Y' is not"),
        ({"provider": "x", "as_of": "2025-01-01", "currency": "EUR"}, "currency: 'EUR'"),
        ({"provider": "x", "as_of": "2025-01-01", "models": {"m": 1}}, "models: must map"),
    ],
)
def test_a_bad_table_is_refused_naming_the_file_and_field(
    tmp_path: Path, doc: dict[str, object], named: str
) -> None:
    path = tmp_path / "prices-x.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PolicyError, match=named) as err:
        load_price_table(path)
    assert str(path) in str(err.value)


def test_a_directory_without_tables_is_an_error_and_a_file_is_one_table(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no prices-"):
        load_price_table(tmp_path)
    one = _table(tmp_path / "custom.yaml", "custom", "2026-01-01", {"m": {"input_per_mtok": 1}})
    prices = load_price_table(one)
    assert (dict(prices), prices.versions) == (
        {"m": {"input_per_mtok": 1}},
        (("custom", "2026-01-01"),),
    )


def test_a_model_with_no_price_is_refused_naming_the_model_and_field(tmp_path: Path) -> None:
    prices = load_price_table(
        _table(tmp_path / "prices-p.yaml", "p", "2025-01-01", {"m": {"input_per_mtok": 1}})
    )
    text = _policy({"m": {"provider": "p", "output_per_mtok": 2}, "bare": {"provider": "p"}})
    with pytest.raises(PolicyError) as err:
        parse_policy(text, prices)
    message = str(err.value)
    assert "models.m.cached_input_per_mtok: no price" in message
    assert "models.m.input_per_mtok" not in message  # from the table
    assert "models.m.output_per_mtok" not in message  # from the entry
    for field in PRICE_FIELDS:
        assert f"models.bare.{field}: no price" in message


def test_explicit_zeros_price_a_local_model_and_entries_win_field_by_field(
    tmp_path: Path,
) -> None:
    prices = load_price_table(
        _table(
            tmp_path / "prices-p.yaml",
            "p",
            "2025-01-01",
            {"m": {"input_per_mtok": 1, "cached_input_per_mtok": 0.5, "output_per_mtok": 4}},
        )
    )
    zeros: dict[str, object] = dict.fromkeys(PRICE_FIELDS, 0)
    providers = {
        "p": {"base_url": "https://p.example/v1"},
        "local": {"type": "compatible", "base_url": "http://127.0.0.1:8000/v1"},
    }
    text = _policy(
        {"m": {"provider": "p", "input_per_mtok": 2}, "llama": {"provider": "local", **zeros}},
        providers,
    )
    policy = parse_policy(text, prices)
    m = policy.models["m"]
    assert (m.input_per_mtok, m.cached_input_per_mtok, m.output_per_mtok) == (2, 0.5, 4)
    assert cost_usd(policy.models["llama"], 10_000, 10_000, 0, 5_000, 5_000) == 0.0
    assert policy.price_tables == (("p", "2025-01-01"),)
    # A plain mapping of prices (no tables) still prices, with no table to show.
    assert parse_policy(text, dict(prices)).price_tables == ()


def test_a_document_cannot_claim_price_tables() -> None:
    text = DEFAULT_POLICY_FILE.read_text() + "\n_price_tables: [[openai, '2030-01-01']]\n"
    with pytest.raises(PolicyError, match="_price_tables"):
        parse_policy(text)


# --- the shipped default policy ----------------------------------------------------------


@pytest.fixture(scope="module")
def default() -> Policy:
    return load_policy(DEFAULT_POLICY_FILE, PRICE_TABLE_FILE)


def test_every_default_chain_falls_back_across_vendors_and_keeps_an_openai_model(
    default: Policy,
) -> None:
    assert set(default.providers) == {"openai", "anthropic", "gemini"}
    for intent, tiers in default.routes.items():
        for tier, chain in tiers.items():
            vendors = [default.models[m].provider for m in chain]
            assert vendors[1] != vendors[0], (intent, tier, chain)  # first fallback crosses
            assert "openai" in vendors, (intent, tier)  # a one-key (OpenAI) install serves it
    for field in ("default_model", "baseline_model"):
        assert default.models[getattr(default, field)].provider == "openai"
    assert default.baseline_model == "gpt-4o"


def test_small_talk_code_and_math_have_primaries_at_three_vendors(default: Policy) -> None:
    primary = {i: default.models[default.routes[i]["medium"][0]].provider for i in default.routes}
    assert (primary["chat"], primary["code"], primary["math"]) == ("gemini", "anthropic", "openai")


def test_no_json_mode_request_is_sent_to_a_model_without_one(default: Policy) -> None:
    # Messages has no schema-less JSON mode: Claude must not claim json (the filter).
    for name, m in default.models.items():
        if m.provider == "anthropic":
            assert "json" not in m.capabilities, name
            assert m.context_window == 200_000


# --- tollgate_price_table_info -------------------------------------------------------------


def _series(registry: CollectorRegistry) -> set[tuple[str, str]]:
    out = set()
    for family in registry.collect():
        if family.name == "tollgate_price_table_info":
            for s in family.samples:
                assert s.value == 1
                out.add((s.labels["provider"], s.labels["as_of"]))
    return out


def _repriced(policy: Policy, tmp_path: Path) -> Policy:
    """The same policy priced by tables where OpenAI's prices are newer."""
    for path in SHIPPED:
        doc = yaml.safe_load(path.read_text())
        if doc["provider"] == "openai":
            doc["as_of"] = "2026-12-01"
        (tmp_path / path.name).write_text(yaml.safe_dump(doc))
    return parse_policy(DEFAULT_POLICY_FILE.read_text(), load_price_table(tmp_path))


def test_the_router_shows_one_series_per_table_and_drops_replaced_ones(
    default: Policy, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    metrics = RouterMetrics(create_families("router", registry))
    first = PolicyState(default, "", default.version, "default", 0.0)
    metrics.changed(None, first)
    assert _series(registry) == set(load_prices().versions)
    new = _repriced(default, tmp_path)
    metrics.changed(first, PolicyState(new, "", new.version, "default", 1.0))
    assert _series(registry) == {
        ("anthropic", "2025-10-15"),
        ("gemini", "2025-07-22"),
        ("openai", "2026-12-01"),
    }


def test_the_orchestrator_shows_the_tables_of_the_policy_it_follows(
    default: Policy, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    metrics = OrchestratorMetrics(
        create_families("orchestrator", registry),
        models={n: m.provider for n, m in default.models.items()},
        tenants=[],
        routes=[],
        budget_store=False,
    )
    metrics.follow(default)
    assert _series(registry) == set(load_prices().versions)
    metrics.follow(_repriced(default, tmp_path))
    assert ("openai", "2026-12-01") in _series(registry)
    assert ("openai", "2025-08-07") not in _series(registry)
    assert isinstance(load_price_table(), Prices)
