"""The bench harness's pure parts: percentiles, wrk and /proc parsing, reports, goals."""

from __future__ import annotations

import pytest
import yaml

from bench import compare, litellm_peer, metrics_cost, micro, procstat, report, stats, wrk

WRK_OUT = """Running 4s test @ http://127.0.0.1:1/v1/chat/completions
  1 threads and 1 connections
WRK_JSON {"requests":4000,"duration_us":4000000,"bytes":1,"errors":{"connect":0,"read":0,"write":0,"status":2,"timeout":1},"latency_us":{"min":90,"mean":250.5,"max":9000,"p50":200,"p90":400,"p99":1500,"p999":8000}}
"""  # noqa: E501


def result(p50: float, p99: float, rps: float) -> wrk.WrkResult:
    return wrk.WrkResult(int(rps), 1.0, 0, p50, p50, p99, p50, p99)


def test_percentile_is_nearest_rank() -> None:
    samples = list(range(1, 101))  # 1..100
    assert stats.percentile(samples, 50) == 50
    assert stats.percentile(samples, 99) == 99
    assert stats.percentile(samples, 100) == 100
    assert stats.percentile([5.0], 99) == 5.0
    assert stats.percentile([3, 1, 2], 50) == 2  # unsorted input


@pytest.mark.parametrize("q", [0, -1, 101])
def test_percentile_rejects_bad_q(q: float) -> None:
    with pytest.raises(ValueError, match="q must be"):
        stats.percentile([1, 2], q)


def test_percentile_and_median_need_samples() -> None:
    with pytest.raises(ValueError, match="no samples"):
        stats.percentile([], 50)
    with pytest.raises(ValueError, match="no values"):
        stats.median([])


def test_added_ratio_share_median() -> None:
    assert stats.added(1.5, 0.2) == pytest.approx(1.3)
    assert stats.added(0.1, 0.2) == 0.0  # never negative
    assert stats.ratio(500, 100) == 5
    assert stats.ratio(1, 0) is None
    assert stats.share(5, 200) == 2.5
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 2, 3]) == 2.5


def test_wrk_output_is_parsed_with_every_error_counted() -> None:
    r = wrk.parse_output(WRK_OUT)
    assert r.requests == 4000
    assert r.rps == 1000
    assert r.errors == 3  # status + timeout
    assert (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) == (0.2, 0.4, 1.5, 9.0)


def test_wrk_output_without_the_json_line_is_an_error() -> None:
    with pytest.raises(wrk.WrkError, match="no WRK_JSON line"):
        wrk.parse_output("unable to connect to 127.0.0.1:1 Connection refused\n")
    with pytest.raises(wrk.WrkError, match="bad WRK_JSON line"):
        wrk.parse_output('WRK_JSON {"requests": 1}\n')


def test_wrk_command_passes_the_load_to_the_script() -> None:
    cmd = wrk.command("http://h/v1", 16, 4.2, wrk.Load(mode="unique", key="k"), threads=2)
    assert cmd[:4] == ["wrk", "-t2", "-c16", "-d4s"]
    assert cmd[-5:] == ["--", "gpt-4o-mini", "unique", "0", "k"]
    assert wrk.command("http://h", 1, 1, wrk.Load(), threads=4)[1] == "-t1"  # threads <= conns
    with pytest.raises(ValueError, match="connections"):
        wrk.command("http://h", 0, 1, wrk.Load())
    with pytest.raises(ValueError, match=r"Load\.mode"):
        wrk.Load(mode="random")


def test_proc_stat_is_parsed_after_a_command_name_with_spaces() -> None:
    fields = ["S", *[str(i) for i in range(4, 14)], "250", "70", *["0"] * 30]
    text = "1234 (python -m tollgate (x)) " + " ".join(fields)
    assert procstat.parse_stat(text) == (250, 70)
    with pytest.raises(ValueError, match="fields"):
        procstat.parse_stat("1 (x) S 1 2")


def test_micro_lines_of_both_tools_are_parsed() -> None:
    out = (
        "decision     n=20000  p50=    13.1 us   p99=    40.2 us   mean=  15.0 us\n"
        "grpc-lookup memory     n=2000   p50=    630.5 us   p99=   1200.0 us\n"
        "something else\n"
    )
    got = micro.parse_lines(out)
    assert got == [
        micro.Micro("decision", 20000, 13.1, 40.2),
        micro.Micro("grpc-lookup memory", 2000, 630.5, 1200.0),
    ]


def test_replace_section_replaces_only_the_generated_part() -> None:
    doc = f"# B\nintro\n{report.BEGIN}\nold\n{report.END}\noutro\n"
    new = report.replace_section(doc, "new table")
    assert "old" not in new
    assert new.startswith("# B\nintro\n") and new.endswith("outro\n")
    assert "new table" in report.replace_section("# B\n", "new table")  # appended
    assert report.replace_section(new, "new table") == new  # idempotent


def _grid() -> report.Grid:
    g = report.Grid()
    g.add("direct", 1, result(0.2, 0.5, 5000), {"simulator": 60})
    g.add("miss", 1, result(1.1, 3.0, 800), {})
    g.add("miss", 1, result(1.0, 2.5, 800), {})
    g.add("miss", 1, result(0.9, 2.0, 800), {})
    g.add("hit", 1, result(0.6, 1.0, 1500), {})
    g.add("miss", 16, result(10, 20, 1000), {"orchestrator": 900.0})
    g.add("litellm", 16, result(100, 200, 125), {"litellm": 7000.0})
    return g


def test_goals_use_medians_and_added_latency() -> None:
    cost = metrics_cost.MetricsCost(3, 4, 8, 1000, 960, 600, 580, 500, 510)
    gs = {g.text: g for g in report.goals(_grid(), [micro.Micro("decision", 1, 13, 45)], cost)}
    p50 = gs["miss path, 1 connection: added p50 <= 1.0 ms"]
    assert p50.figure == "0.80 ms" and p50.met is True  # median 1.0 minus 0.2
    assert gs["miss path, 1 connection: added p99 <= 3 ms"].met is True
    assert gs["hit path: p50 <= 0.7 ms (whole request)"].met is True
    x = gs["throughput >= 5x LiteLLM at 16 connections (miss path)"]
    assert x.figure == "8.0x" and x.met is True
    assert gs["router decision p99 <= 50 µs in process"].met is True
    assert gs["at most 5 % of throughput lost to metrics"].met is True  # 40 of 1000 µs: 4 %


def test_goals_not_measured_say_so() -> None:
    gs = report.goals(report.Grid(), [], None)
    assert all(g.met is None for g in gs)
    assert any("BENCH_PEERS=litellm" in g.figure for g in gs)


def test_render_has_every_table() -> None:
    text = report.render({"date": "d", "cores": "2"}, _grid(), [], None, 4, 3)
    for heading in ("Latency at 1 connection", "Throughput", "CPU per request", "Goals"):
        assert heading in text
    assert "| tollgate, cache miss | 1000 | " not in text  # no 64-connection cell: no row
    # CPU only of the processes on a path: LiteLLM's row has no orchestrator figure.
    assert "| LiteLLM proxy | - | - | - | - | 7000 µs |" in text
    assert "| tollgate, cache miss | 900 µs | - | - | - | - |" in text


def test_metrics_cost_share_and_throughput_loss() -> None:
    m = metrics_cost.MetricsCost(5, 5, 8, 2000, 1880, 1200, 1120, 450, 480)
    assert m.cost_us == 120
    assert m.cost_percent == pytest.approx(6.0)
    assert m.met is False
    assert m.throughput_lost_percent == pytest.approx(6.25)


def test_variant_medians() -> None:
    v = compare.Variant("x")
    for cpu, rps in ((100.0, 10.0), (300.0, 30.0), (200.0, 20.0)):
        v.samples.append(compare.Sample({"orchestrator": cpu, "simulator": 50.0}, rps, 1, 2))
    assert v.median("gateway_us") == 200  # the simulator is not the gateway
    assert v.median("cpu:simulator") == 50
    assert v.median("rps") == 20


def test_litellm_config_points_at_the_upstream() -> None:
    cfg = yaml.safe_load(litellm_peer.config_yaml("http://127.0.0.1:9/v1"))
    (entry,) = cfg["model_list"]
    assert entry["model_name"] == "gpt-4o-mini"
    assert entry["litellm_params"]["api_base"] == "http://127.0.0.1:9/v1"
    assert cfg["litellm_settings"]["callbacks"] == ["prometheus"]
    assert cfg["general_settings"]["master_key"] == litellm_peer.MASTER_KEY
    off = yaml.safe_load(litellm_peer.config_yaml("http://x/v1", prometheus=False))
    assert "callbacks" not in off["litellm_settings"]


def test_metrics_cost_pairs_each_round_with_its_neighbour() -> None:
    on, off = compare.Variant("on"), compare.Variant("off")
    # The machine drifts between rounds; each round's on/off pair ran back to back.
    for a, b in ((1000.0, 950.0), (1100.0, 2950.0), (3000.0, 2900.0)):
        on.samples.append(compare.Sample({"orchestrator": a}, 100, 1, 2))
        off.samples.append(compare.Sample({"orchestrator": b}, 100, 1, 2))
    m = metrics_cost.summarize(on, off, 4, 8)
    assert m.cost_us == 50  # median of 50, -1850, 100; the medians' difference is -1800
    assert m.throughput_lost_percent == 0
