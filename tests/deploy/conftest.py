"""Fixtures for the chart tests: every values set rendered once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.chart import CI_VALUES, KIND_VALUES, Manifest, render

# name -> values files; "default" is the chart's values.yaml alone.
VALUE_SETS: dict[str, tuple[Path, ...]] = {
    "default": (),
    **{p.stem: (p,) for p in CI_VALUES},
    "kind": (KIND_VALUES,),
}


@pytest.fixture(scope="session")
def renders() -> dict[str, list[Manifest]]:
    """Every values set rendered with the monitoring APIs available."""
    return {name: render(values) for name, values in VALUE_SETS.items()}


@pytest.fixture(scope="session")
def default_render(renders: dict[str, list[Manifest]]) -> list[Manifest]:
    return renders["default"]
