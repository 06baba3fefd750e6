"""bench.plots: each figure, drawn from a small synthetic data set, is a PNG (no servers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ADAPTIVE = {
    "series": {
        "adaptive, first run (from 5)": {
            "t": [1.0, 2.0, 3.0, 4.0, 5.0],
            "goodput": [10.0, 40.0, 70.0, 75.0, 74.0],
            "size_t": [0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0],
            "size": [None, 5, 10, 20, 40, 42, 40],
            "processes": [None, 5, 8, 19, 38, 42, 40],
        },
        "fixed -c 40": {
            "t": [1.0, 2.0, 3.0, 4.0, 5.0],
            "goodput": [70.0, 76.0, 74.0, 75.0, 73.0],
            "size_t": [0.0, 2.5, 5.0],
            "size": [40, 40, 40],
            "processes": [40, 40, 40],
        },
    },
    "best": "fixed -c 40",
    "best_goodput": 74.0,
    "capacity": 40,
    "adaptive_runs": ["adaptive, first run (from 5)"],
}
BREAKER = {
    "calls": {
        "proj (breaker)": {"t": [0, 1, 2, 3, 4, 5], "per_s": [60, 61, 20, 0, 1, 60]},
        "no breaker": {"t": [0, 1, 2, 3, 4, 5], "per_s": [60, 60, 120, 118, 121, 70]},
    },
    "outage": [1.5, 4.5],
    "states": [[0.0, "closed"], [1.8, "open"], [3.5, "half-open"], [3.6, "open"], [4.6, "closed"]],
    "states_of": "proj (breaker)",
    "probes": [2.8, 3.55],
}
URGENT = {
    "waits_ms": {
        "proj idle": [5.0, 6.0, 7.5, 17.0],
        "proj backlog": [0.0, 8.0, 9.0, 16.5],
        "bare Celery backlog": [18_000.0, 18_200.0, 18_500.0],
    }
}
RATELIMIT = {
    "per_second": {"proj global limit": [20, 20, 19, 20], "Celery rate_limit": [60, 74, 6, 5]},
    "limit": 20.0,
    "workers": 4,
}
CASES = [
    ("adaptive", plots.adaptive, ADAPTIVE),
    ("breaker_outage", plots.breaker_timeline, BREAKER),
    ("urgent_latency", plots.urgent_cdf, URGENT),
    ("ratelimit", plots.ratelimit, RATELIMIT),
]


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert 5_000 < len(data) < 150_000


@pytest.mark.parametrize(("name", "draw", "data"), CASES, ids=[c[0] for c in CASES])
def test_each_plot_writes_a_png(
    name: str, draw: plots.Draw, data: dict[str, Any], tmp_path: Path
) -> None:
    out = draw(tmp_path / f"{name}.png", **data)
    assert out == tmp_path / f"{name}.png"
    _assert_png(out)


def test_breaker_timeline_without_states(tmp_path: Path) -> None:
    data = {**BREAKER, "states": [], "states_of": ""}
    _assert_png(plots.breaker_timeline(tmp_path / "b.png", **data))


def test_record_writes_json_and_png_and_redraw_draws_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, _, data in CASES:
        plots.record(name, data, results=tmp_path)
        assert f"{name}.png" in capsys.readouterr().out
        assert json.loads((tmp_path / f"{name}.json").read_text())["data"] == data
    for png in tmp_path.glob("*.png"):
        png.unlink()
    drawn = plots.redraw(tmp_path)
    assert sorted(p.name for p in drawn) == sorted(f"{name}.png" for name, _, _ in CASES)
    for png in drawn:
        _assert_png(png)


def test_per_second_bins() -> None:
    assert plots.per_second([10.0, 10.5, 11.2, 13.9], 10.0) == [2, 1, 0, 1]
    assert plots.per_second([], 5.0, end=7.0) == [0, 0, 0]
