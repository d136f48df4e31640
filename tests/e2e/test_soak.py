"""15 minutes of the soak benchmark as a test (slow): steady mixed traffic against a real server
with the built-in models; no request may fail and RSS may grow less than 5% after warm-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak_bench.py"


@pytest.mark.slow
def test_fifteen_minutes_of_mixed_traffic_leak_nothing_and_fail_nothing(tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--minutes", "15", "--warmup-minutes", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=45 * 60,
    )
    summary = json.loads(out.read_text())["summary"] if out.exists() else None
    assert summary is not None, done.stdout[-2000:] + done.stderr[-2000:]
    assert summary["errors"] == 0, summary["error_examples"]
    assert summary["growth_after_warmup"]["rss_mib"]["change_pct"] < 5, summary["growth_after_warmup"]
    assert summary["growth_after_warmup"]["fds"]["change_pct"] <= 10, summary["growth_after_warmup"]
    assert summary["growth_after_warmup"]["threads"]["change_pct"] <= 10, summary["growth_after_warmup"]
    assert done.returncode == 0
