"""The pieces every tollgate dashboard shares: variables, matchers and panel factories.

Each panel factory takes a title, a description and a unit first, so no panel can be
built without them; queries are plain PromQL strings that use the dashboard variables
(``$namespace``, ``$tenant``, ``$model``) and ``$__rate_interval``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    prometheus,
    stat,
    statetimeline,
    timeseries,
)
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
NS = 'namespace=~"$namespace"'
TENANT = 'tenant=~"$tenant"'
MODEL = 'model=~"$model"'
TAG = "tollgate"
# Latency histograms whose buckets carry exemplars (trace_id, span_id of a sampled trace,
# OpenMetrics exposition only): a range query on one of their _bucket series asks Grafana
# for them too, so the panel links its points to traces (docs/observability.md).
EXEMPLAR_HISTOGRAMS = (
    "tollgate_http_request_duration_seconds",
    "tollgate_gateway_overhead_seconds",
    "tollgate_llm_upstream_duration_seconds",
    "tollgate_llm_time_to_first_token_seconds",
    "grpc_server_handling_seconds",
)
_EXEMPLAR_BUCKETS = re.compile(rf"\b(?:{'|'.join(EXEMPLAR_HISTOGRAMS)})_bucket\b")


def sel(*matchers: str) -> str:
    """A label selector: ``sel(NS, 'result="hit"')`` is
    ``{namespace=~"$namespace", result="hit"}``."""
    return "{" + ", ".join(matchers) + "}"


def rate(metric: str, *matchers: str, by: str = "", window: str = RATE) -> str:
    """``sum by (<by>) (rate(<metric>{<matchers>}[<window>]))``."""
    grouping = f"by ({by}) " if by else ""
    return f"sum {grouping}(rate({metric}{sel(*matchers)}[{window}]))"


def quantile(q: float, histogram: str, *matchers: str, by: str = "") -> str:
    """The ``q`` quantile of a histogram family over ``$__rate_interval``."""
    grouping = f"le, {by}" if by else "le"
    return (
        f"histogram_quantile({q}, sum by ({grouping}) "
        f"(rate({histogram}_bucket{sel(*matchers)}[{RATE}])))"
    )


def ratio_or_zero(numerator: str, denominator: str) -> str:
    """``numerator / denominator`` that is 0, not empty, while the numerator has no series."""
    return f"({numerator} or {denominator} * 0) / {denominator}"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def _refid(i: int) -> str:
    return chr(ord("A") + i)


def _target(query: Query, i: int, instant: bool) -> prometheus.Dataquery:
    target = (
        prometheus.Dataquery()
        .expr(query.expr)
        .ref_id(_refid(i))
        .datasource(DATASOURCE)
        .legend_format(query.legend or "__auto")
    )
    if instant:
        return target.instant()
    if _EXEMPLAR_BUCKETS.search(query.expr):
        target = target.exemplar(True)
    return target.range()


def timeseries_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    width: int = 12,
    height: int = 8,
    min_val: float | None = None,
    max_val: float | None = None,
    stacked: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(10 if not stacked else 40)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            cb.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )
    if stacked:
        panel = panel.stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL))
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    for i, query in enumerate(queries):
        panel = panel.with_target(_target(query, i, instant=False))
    return panel


def stat_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    width: int = 6,
    height: int = 4,
    decimals: int | None = None,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .text_mode(common.BigValueTextMode.AUTO)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(_thresholds(thresholds))
    )
    if decimals is not None:
        panel = panel.decimals(decimals)
    for i, query in enumerate(queries):
        panel = panel.with_target(_target(query, i, instant=True))
    return panel


def bargauge_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    width: int = 12,
    height: int = 8,
    min_val: float = 0,
    max_val: float = 1,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .min(min_val)
        .max(max_val)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.HORIZONTAL)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(_thresholds(thresholds))
    )
    for i, query in enumerate(queries):
        panel = panel.with_target(_target(query, i, instant=True))
    return panel


def state_timeline_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    states: Sequence[tuple[str, str, str]],
    *,
    width: int = 12,
    height: int = 8,
) -> statetimeline.Panel:
    """``states`` maps a value to a text and a colour: ``[("0", "closed", "green"), ...]``."""
    mapping = ValueMap(
        options={
            value: ValueMappingResult(text=text, color=color, index=i)
            for i, (value, text, color) in enumerate(states)
        }
    )
    panel = (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .mappings([mapping])
        .show_value(common.VisibilityMode.NEVER)
    )
    for i, query in enumerate(queries):
        panel = panel.with_target(_target(query, i, instant=False))
    return panel


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=v, color=c) for v, c in steps])
    )


def _query_variable(name: str, label: str, query: str, description: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .description(description)
        .query(query)
        .datasource(DATASOURCE)
        .multi(True)
        .include_all(True)
        # ".*" also matches series without the label (local runs have no namespace).
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def new_dashboard(uid: str, title: str, description: str) -> dashboard.Dashboard:
    """A dashboard with tollgate's variables, time range and links to its siblings."""
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .readonly()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .timezone("browser")
        .refresh("30s")
        .link(
            dashboard.DashboardLink("tollgate dashboards")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .with_variable(
            dashboard.DatasourceVariable("datasource")
            .label("Data source")
            .description("The Prometheus that scrapes tollgate.")
            .type("prometheus")
        )
        .with_variable(
            _query_variable(
                "namespace",
                "Namespace",
                "label_values(tollgate_build_info, namespace)",
                "Kubernetes namespaces running tollgate.",
            )
        )
        .with_variable(
            _query_variable(
                "tenant",
                "Tenant",
                f"label_values(tollgate_llm_requests_total{sel(NS)}, tenant)",
                "Tenants (API key owners); applies to panels with a tenant label.",
            )
        )
        .with_variable(
            _query_variable(
                "model",
                "Model",
                f"label_values(tollgate_llm_requests_total{sel(NS)}, model)",
                "Models that served requests; applies to panels with a model label.",
            )
        )
    )


def render(board: dashboard.Dashboard) -> str:
    """The dashboard as stable JSON: sorted keys, panel ids numbered in order."""
    model = board.build()
    for i, panel in enumerate(model.panels or [], start=1):
        panel.id_val = i
    return JSONEncoder(sort_keys=True, indent=2).encode(model) + "\n"
