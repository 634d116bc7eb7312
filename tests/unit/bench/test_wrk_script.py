"""chat.lua drives a real simulator through wrk: bodies are valid, prompts vary."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import wrk
from tools.stack import Stack


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (make system-deps)")
def test_both_modes_get_only_2xx_answers(tmp_path: Path) -> None:
    stack = Stack(log_dir=tmp_path, sim_env={"TOLLGATE_SIM_LATENCY_SCALE": "0"})
    try:
        stack.start_sim()
        url = f"{stack.sim_url}/v1/chat/completions"
        key = stack.sim_key
        for load in (wrk.Load(key=key), wrk.Load(mode="unique", temperature="0.7", key=key)):
            r = wrk.run(url, 2, 1, load)
            assert r.requests > 0
            assert r.errors == 0  # a malformed body would be a 400, counted as a status error
            assert 0 < r.p50_ms <= r.p99_ms
    finally:
        stack.stop()
