"""bench.tracing_cost's pure parts: the summaries, the figures, the rendering and the goals."""

from __future__ import annotations

import pytest

from bench import compare, report, tracing_cost


def _variant(name: str, rounds: list[tuple[float, float]], requests: int = 0) -> compare.Variant:
    v = compare.Variant(name, requests=requests)
    for cpu, rps in rounds:
        v.samples.append(compare.Sample({"orchestrator": cpu / 2, "router": cpu / 2}, rps, 1, 2))
    return v


def _cost(one_us: float = 20.0, full_us: float = 400.0) -> tracing_cost.TracingCost:
    levels = (
        tracing_cost.Level("off", 1000, 500, 400),
        tracing_cost.Level("1 %", 1000 + one_us, 510, 395, one_us, 1.25, 0.08),
        tracing_cost.Level("100 %", 1000 + full_us, 700, 300, full_us, 25.0, 7.5),
    )
    miss = tracing_cost.PathCost("miss", 7, 4, 8, levels)
    return tracing_cost.TracingCost(miss=miss, checks=tracing_cost.OffChecks(30, 5))


def test_summary_pairs_each_level_with_off_in_its_round() -> None:
    # The machine drifts between rounds; each round's three ran back to back.
    off = _variant("off", [(1000, 400), (3000, 100), (2000, 200)], requests=9000)
    one = _variant("1 %", [(1020, 400), (3060, 99), (2030, 200)], requests=9000)
    full = _variant("100 %", [(1400, 300), (3300, 90), (2500, 150)], requests=1000)
    p = tracing_cost.summarize("miss", [off, one, full], [None, 72, 7500], 4, 8)
    assert [lv.name for lv in p.levels] == ["off", "1 %", "100 %"]
    assert p.off.cpu_us == 2000 and p.off.cost_us == 0 and p.off.spans_per_request is None
    lv1, lv100 = p.level("1 %"), p.level("100 %")
    assert lv1.cost_us == 30  # median of 20, 60, 30
    assert lv1.spans_per_request == pytest.approx(0.008)
    assert lv100.cost_us == 400  # median of 400, 300, 500
    assert lv100.spans_per_request == 7.5
    assert lv100.rps_lost_percent == 25  # median of 25, 10, 25
    assert lv1.orch_us == 1015  # half of the gateway here
    assert p.cost_percent(lv1) == pytest.approx(1.5)  # of off's CPU per request
    assert p.rounds == 3


def test_paired_differences_and_sample_fields() -> None:
    a = _variant("a", [(10, 100), (20, 100), (90, 50)])
    b = _variant("b", [(5, 100), (10, 80), (100, 100)])
    assert compare.paired(a, b) == 5  # of 5, 10, -10
    assert compare.paired(a, b, "rps") == 0  # of 0, 20, -50
    assert compare.paired_rps_lost(a, b) == 0  # of 0, -25, 50
    s = a.samples[0]
    assert s.get("cpu:router") == 5 and s.get("rps") == 100 and s.get("gateway_us") == 10


def test_off_checks_per_request_and_the_goals() -> None:
    t = _cost()
    assert t.checks.per_request_us == pytest.approx(
        (tracing_cost.OFF_CALLS * 30 + tracing_cost.OFF_BRANCHES * 5) / 1000
    )
    assert t.off_percent == pytest.approx(100 * t.checks.per_request_us / 1000)
    assert t.off_met is True
    assert t.one_percent == pytest.approx(2.0) and t.met is True
    assert _cost(one_us=31).met is False  # 3.1 % of 1000 µs
    heavy = tracing_cost.TracingCost(_cost().miss, tracing_cost.OffChecks(1000, 100))
    assert heavy.off_met is False  # 11.3 µs: 1.13 %


def test_off_checks_measure_tracing_off() -> None:
    c = tracing_cost.off_checks(number=1000, repeat=2)
    assert c.call_ns >= 0 and c.branch_ns >= 0


def test_render_shows_every_level_and_the_goals() -> None:
    text = tracing_cost.render(_cost())
    assert "| off | 1000 µs | 500 µs | 400 req/s | - | - |" in text
    assert "| 1 % | 1020 µs | 510 µs | 395 req/s | +20 µs (+2.0 %), throughput -1.2 % | 0.08 |" in (
        text
    )
    assert "| 100 % | 1400 µs | 700 µs | 300 req/s | +400 µs (+40.0 %)" in text
    assert "7.50 |" in text
    assert "Cache-hit path" not in text  # not run
    assert "**2.0 %, met**" in text
    hit = tracing_cost.TracingCost(_cost().miss, _cost().checks, hit=_cost().miss)
    assert tracing_cost.render(hit).count("| 100 % |") == 2


def test_report_goals_and_section_for_tracing() -> None:
    gs = {g.text: g for g in report.goals(report.Grid(), [], None, _cost(one_us=40))}
    off = gs["tracing off: no measurable cost"]
    assert off.met is True and "µs per miss request" in off.figure
    one = gs["tracing 1 %: ≤ 3 % of gateway CPU per request"]
    assert one.met is False and one.figure.startswith("+4.0 % (+40 µs)")
    missing = {g.text: g for g in report.goals(report.Grid(), [], None)}
    assert missing["tracing off: no measurable cost"].met is None
    text = report.render({}, report.Grid(), [], None, 4, 3, _cost())
    assert "### Tracing cost (off, 1 % and 100 % sampling)" in text
    assert "| tracing 1 %: ≤ 3 % of gateway CPU per request | +2.0 % (+20 µs)" in text
    assert "Tracing cost" not in report.render({}, report.Grid(), [], None, 4, 3)


def test_cache_results_are_read_from_the_exposition() -> None:
    text = "\n".join(
        [
            "# TYPE tollgate_cache_results_total counter",
            'tollgate_cache_results_total{api="chat",result="miss"} 809.0',
            'tollgate_cache_results_total{api="responses",result="miss"} 1.0',
            'tollgate_cache_results_total{api="chat",result="error"} 1094.0',
            'tollgate_cache_results_created{api="chat",result="miss"} 1.7e9',
        ]
    )
    assert tracing_cost.cache_results(text) == {"miss": 810.0, "error": 1094.0}
    lv = tracing_cost.Level("100 %", 1, 1, 1, cache={"miss": 25.0, "error": 75.0, "hit": 0})
    assert lv.cache_shares() == "error 75 %, miss 25 %"
    assert tracing_cost.Level("off", 1, 1, 1).cache_shares() == "-"


def test_render_warns_when_a_level_skipped_the_cache() -> None:
    t = _cost()
    assert "**Requests that skipped" not in tracing_cost.render(t)
    full = tracing_cost.Level("100 %", 1400, 700, 300, 400, cache={"miss": 43, "error": 57})
    miss = tracing_cost.PathCost("miss", 7, 4, 8, (t.miss.off, t.miss.level("1 %"), full))
    text = tracing_cost.render(tracing_cost.TracingCost(miss, t.checks))
    assert (
        "**Requests that skipped the cache** (its lookup failed): 100 % on the miss path 57 %"
        in (text)
    )
    assert "| error 57 %, miss 43 % |" in text
