"""Per-queue and per-category figures from the workers' counts. Pure."""

from __future__ import annotations

import pytest

from proj.figures import WAIT_BUCKETS, Figures, by_route, quantile, rollup, wait_bucket


def test_wait_buckets_hold_their_bound_and_beyond_goes_last() -> None:
    assert wait_bucket(0.0) == 0
    assert wait_bucket(0.005) == 0
    assert wait_bucket(0.006) == 1
    assert wait_bucket(10**6) == len(WAIT_BUCKETS)


def test_quantile_interpolates_inside_its_bucket() -> None:
    counts = [0.0] * (len(WAIT_BUCKETS) + 1)
    assert quantile(counts, 0.5) is None
    counts[wait_bucket(0.05)] = 100  # all in (0.025, 0.05]
    assert quantile(counts, 0.5) == pytest.approx(0.0375)
    assert quantile(counts, 0.99) == pytest.approx(0.025 + 0.025 * 0.99)
    counts[-1] = 100  # as many beyond the last bound: p99 is reported as the last bound
    assert quantile(counts, 0.99) == WAIT_BUCKETS[-1]


def test_counts_become_figures_per_route_queue_and_category() -> None:
    b = str(wait_bucket(0.01))
    counts = {
        ("truns", "legal", "legal", "succeeded"): 3.0,
        ("truns", "legal", "legal", "failed"): 1.0,
        ("truns", "general", "lead", "succeeded"): 2.0,
        ("truns", "general", "legal", "retried"): 1.0,
        ("trun_s", "legal", "legal"): 8.0,
        ("twait", "legal", "legal", b): 4.0,
        ("twait_s", "legal", "legal"): 0.03,
        ("qcost", "legal", "legal"): 0.25,
        ("calls", "ai", "success", "-"): 9.0,  # call counts are not task figures
    }
    routes = by_route(counts)
    legal = routes[("legal", "legal")]
    assert (legal.total, legal.error_rate, legal.mean_run_s, legal.cost_usd) == (4, 0.25, 2.0, 0.25)
    assert legal.wait_quantile(0.5) is not None and legal.wait_quantile(0.5) <= 0.01
    per_queue = rollup(routes, 0)
    per_category = rollup(routes, 1)
    assert set(per_queue) == {"legal", "general"}
    assert per_category["legal"].runs == {"succeeded": 3.0, "failed": 1.0, "retried": 1.0}
    assert per_queue["general"].error_rate == 0.0
    assert Figures().error_rate is None and Figures().mean_run_s is None
