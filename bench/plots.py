"""Plots of the benchmarks' time series: one function per figure, plain data in, a PNG out.

    python -m bench.plots [--results bench/results]

re-draws every ``<name>.png`` from the ``<name>.json`` beside it, without running the
benchmarks again. The benchmarks call :func:`record`, which writes both.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from proj.stats import percentile

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = (8.0, 4.5)  # inches
DPI = 110
# The breaker's states, bottom to top, as the strip under the breaker timeline draws them.
BREAKER_STATES = ("closed", "half-open", "open")


def _figure() -> Figure:
    return plt.figure(figsize=SIZE, dpi=DPI)


def _closed(xs: Sequence[float], ys: Sequence[float], width: float = 1.0) -> tuple[list, list]:
    """A post-step series of bins of ``width`` with its last bin drawn too."""
    if not xs:
        return [], []
    return [*xs, xs[-1] + width], [*ys, ys[-1]]


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def adaptive(
    path: Path | str,
    *,
    series: Mapping[str, Mapping[str, Sequence[float | None]]],
    best: str,
    best_goodput: float,
    capacity: float | None = None,
    adaptive_runs: Sequence[str] = (),
) -> Path:
    """Goodput (top) and pool size (bottom) over time.

    ``series``: per run, ``t`` (s) and ``goodput`` (successful calls/s over the interval ending
    at ``t``); ``size_t`` (s), ``size`` (the pool's size then) and, optionally, ``processes``
    (the processes it had), None where unknown. ``adaptive_runs`` are drawn in full; of the
    rest only ``best`` (the best fixed size), faintly, with its goodput over the whole run,
    ``best_goodput``, as a horizontal line. ``capacity``: the provider's hidden concurrency,
    drawn on the size axis.
    """
    fig = _figure()
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    runs = list(adaptive_runs) or [k for k in series if k != best]
    highest_size = capacity or 0.0
    if best in series:
        s = series[best]
        top.plot(s["t"], s["goodput"], color="0.6", lw=1, label=f"{best} (per second)")
    top.axhline(best_goodput, color="0.2", ls="--", lw=1.2, label=f"{best}: {best_goodput:.0f}/s")
    for i, name in enumerate(runs):
        s, color = series[name], f"C{i}"
        top.plot(s["t"], s["goodput"], color=color, lw=1.5, label=name, zorder=3)
        for key, style in (("size", {"lw": 1.8}), ("processes", {"lw": 1, "ls": ":"})):
            points = [
                (t, v)
                for t, v in zip(s.get("size_t", s["t"]), s.get(key, ()), strict=False)
                if v is not None and t is not None
            ]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            highest_size = max(highest_size, *ys)
            label = name if key == "size" else None
            bottom.step(xs, ys, where="post", color=color, label=label, zorder=3, **style)
    if any(series[n].get("processes") for n in runs):
        bottom.plot([], [], color="0.4", lw=1, ls=":", label="processes it had")
    if capacity is not None:
        bottom.axhline(capacity, color="tab:red", ls="--", lw=1, label="hidden capacity", zorder=2)
    goodputs = [g for n in [*runs, best] if n in series for g in series[n]["goodput"] if g]
    top.set_ylim(0, max([best_goodput, *goodputs]) * 1.2)
    top.set_ylabel("goodput (ok calls/s)")
    top.set_title("Adaptive concurrency: goodput and pool size over time")
    top.legend(loc="lower right", fontsize=7, ncol=2)
    bottom.set_ylabel("pool size")
    bottom.set_xlabel("time since the run started (s)")
    bottom.set_ylim(0, max(highest_size, 1) * 1.3)
    bottom.legend(loc="lower right", fontsize=7, ncol=2)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def breaker_timeline(
    path: Path | str,
    *,
    calls: Mapping[str, Mapping[str, Sequence[float]]],
    outage: Sequence[float],
    states: Sequence[tuple[float, str]] | Sequence[Sequence[Any]] = (),
    states_of: str = "",
    probes: Sequence[float] = (),
) -> Path:
    """Calls per second reaching the provider per scenario (top), the outage shaded, and the
    breaker's state over time (bottom strip) if ``states`` holds any (time, state) changes.

    ``calls``: per scenario, ``t`` (start of each 1 s bin, s) and ``per_s`` (calls in it).
    ``outage``: (start, end) in the same time. ``states_of``: the scenario the states are of
    (the strip takes its color). ``probes``: times of half-open probes, marked on the strip
    (a probe that fails at once leaves the breaker half-open too briefly to be seen).
    """
    fig = _figure()
    if states:
        top, strip = fig.subplots(2, 1, sharex=True, height_ratios=(4, 1))
    else:
        top, strip = fig.subplots(1, 1), None
    start, end = outage[0], outage[1]
    for i, (name, s) in enumerate(calls.items()):  # the first on top
        xs, ys = _closed(s["t"], s["per_s"])
        top.step(xs, ys, where="post", lw=1.5, label=name, zorder=3 + len(calls) - i)
    top.axvspan(start, end, color="tab:red", alpha=0.12, label="provider down")
    top.set_ylabel("calls to the provider per s")
    highest = max((max(s["per_s"], default=0) for s in calls.values()), default=0)
    top.set_ylim(0, max(highest, 1) * 1.3)
    top.set_title("Provider outage: calls reaching the provider, with and without the breaker")
    top.legend(loc="upper center", fontsize=8, ncol=3)
    top.grid(alpha=0.3)
    if strip is None:
        top.set_xlabel("time since load started (s)")
    else:
        changes = [(float(t), str(st)) for t, st in states]
        level = {s: i for i, s in enumerate(BREAKER_STATES)}
        last_t = max(max((max(s["t"], default=0.0) for s in calls.values()), default=0.0), end)
        xs = [t for t, _ in changes] + [last_t + 1]
        ys = [level.get(st, len(BREAKER_STATES) - 1) for _, st in changes]
        names = list(calls)  # the strip in the color of the scenario the states are of
        color = f"C{names.index(states_of)}" if states_of in names else "tab:purple"
        strip.step(xs, [*ys, ys[-1]], where="post", color=color, lw=1.5)
        if probes:
            half = level["half-open"]
            strip.plot(probes, [half] * len(probes), "v", color=color, ms=6, label="probe")
            strip.legend(loc="upper left", fontsize=7, frameon=False)
        strip.axvspan(start, end, color="tab:red", alpha=0.12)
        strip.set_yticks(range(len(BREAKER_STATES)), BREAKER_STATES, fontsize=8)
        strip.set_ylim(-0.4, len(BREAKER_STATES) - 0.6)
        strip.set_ylabel("breaker\nstate", fontsize=8)
        strip.set_xlabel("time since load started (s)")
        strip.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def urgent_cdf(path: Path | str, *, waits_ms: Mapping[str, Sequence[float]]) -> Path:
    """CDF of urgent tasks' queue wait per scenario, log x axis (ms)."""
    fig = _figure()
    ax = fig.subplots()
    for name, waits in waits_ms.items():
        if not waits:
            continue
        p99 = percentile(waits, 99)  # as the bench prints it
        xs = sorted(max(float(w), 0.01) for w in waits)  # log axis: no zeros
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", lw=1.5, label=f"{name} (n={len(xs)}, p99 {_ms(p99)})")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("queue wait of an urgent task (ms, log scale)")
    ax.set_ylabel("fraction of urgent tasks")
    ax.set_title("Urgent task queue wait: CDF")
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _save(fig, path)


def _ms(v: float) -> str:
    return f"{v / 1000:.1f} s" if v >= 1000 else f"{v:.1f} ms"


def ratelimit(
    path: Path | str,
    *,
    per_second: Mapping[str, Sequence[float]],
    limit: float,
    workers: int | None = None,
) -> Path:
    """Calls per second at the provider per variant (second 0 = its first call), the limit as a
    line and, given ``workers``, ``workers`` x the limit (a per-worker limit's ceiling)."""
    fig = _figure()
    ax = fig.subplots()
    for name, counts in per_second.items():
        ax.step(*_closed(range(len(counts)), counts), where="post", lw=1.5, label=name, zorder=3)
    ax.axhline(limit, color="tab:red", ls="--", lw=1.2, label=f"limit {limit:g}/s", zorder=2)
    if workers and workers > 1:
        ax.axhline(
            limit * workers,
            color="0.5",
            ls=":",
            lw=1.2,
            label=f"{workers} workers x {limit:g}/s",
        )
    ax.set_xlabel("time since the first call (s)")
    ax.set_ylabel("calls to the provider per s")
    top_y = max([limit * (workers or 1), *(max(c, default=0) for c in per_second.values())])
    ax.set_ylim(0, top_y * 1.3)
    ax.set_title(f"Global rate limit of {limit:g}/s: calls per second")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


Draw = Callable[..., Path]  # a figure: draw(path, **data) -> path
FIGURES: dict[str, Draw] = {
    "adaptive": adaptive,
    "breaker_outage": breaker_timeline,
    "urgent_latency": urgent_cdf,
    "ratelimit": ratelimit,
}


def per_second(times: Sequence[float], start: float, end: float | None = None) -> list[int]:
    """Counts of ``times`` in 1 s bins from ``start`` (through ``end``, or the last time)."""
    last = max(times, default=start) if end is None else end
    counts = [0] * (max(0, math.floor(last - start)) + 1)
    for t in times:
        i = math.floor(t - start)
        if 0 <= i < len(counts):
            counts[i] += 1
    return counts


def record(name: str, data: dict[str, Any], args: Any = None, *, results: Path = RESULTS) -> Path:
    """Write ``results/<name>.json`` (the data, the bench's arguments, the date) and draw
    ``results/<name>.png`` from it; print where the plot went."""
    results.mkdir(parents=True, exist_ok=True)
    doc = {
        "bench": name,
        "recorded": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "args": {k: _plain(v) for k, v in vars(args).items()} if args is not None else {},
        "data": data,
    }
    (results / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    png = FIGURES[name](results / f"{name}.png", **data)
    print(f"plot: {_shown(png)}")
    return png


def _plain(v: Any) -> Any:
    return v if v is None or isinstance(v, bool | int | float | str) else str(v)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def redraw(results: Path = RESULTS) -> list[Path]:
    """Draw the PNG of every known ``<name>.json`` in ``results``."""
    out = []
    for name, draw in FIGURES.items():
        src = results / f"{name}.json"
        if src.exists():
            out.append(draw(results / f"{name}.png", **json.loads(src.read_text())["data"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args()
    drawn = redraw(a.results)
    for png in drawn:
        print(f"plot: {_shown(png)}")
    if not drawn:
        print(f"no results in {a.results}")


if __name__ == "__main__":
    main()
