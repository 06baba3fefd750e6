"""The simulator's pure decision: capacity, outages, errors by key."""

from __future__ import annotations

import random

from proj.sim.config import Outage, RouteConfig, SimConfig, decide, key_fraction


def _decide(cfg: RouteConfig, **kw: object) -> str:
    args: dict[str, object] = {
        "key": "k",
        "elapsed_s": 0.0,
        "in_flight": 0,
        "arrivals_last_s": 1,
        "rng": random.Random(1),
    }
    args.update(kw)
    return decide(cfg, **args).outcome  # type: ignore[arg-type]


def test_sim_capacity_concurrent_answers_429_beyond_k() -> None:
    cfg = RouteConfig(capacity_concurrent=40)
    assert _decide(cfg, in_flight=39) == "ok"
    assert _decide(cfg, in_flight=40) == "rate_limited"


def test_sim_capacity_rps() -> None:
    cfg = RouteConfig(capacity_rps=50)
    assert _decide(cfg, arrivals_last_s=50) == "ok"
    assert _decide(cfg, arrivals_last_s=51) == "rate_limited"


def test_sim_outage_schedule() -> None:
    cfg = RouteConfig(outages=[Outage(start_s=10, duration_s=5, every_s=60)])
    assert _decide(cfg, elapsed_s=9) == "ok"
    assert _decide(cfg, elapsed_s=12) == "outage"
    assert _decide(cfg, elapsed_s=16) == "ok"
    assert _decide(cfg, elapsed_s=72) == "outage"


def test_sim_errors_by_key_are_stable() -> None:
    cfg = RouteConfig(error_rate=0.3, error_by_key=True)
    for key in ("a", "b", "c", "d", "e", "f"):
        expected = "error" if key_fraction(key) < 0.3 else "ok"
        assert _decide(cfg, key=key) == expected
        assert _decide(cfg, key=key, rng=random.Random(99)) == expected


def test_sim_error_rate_is_about_right() -> None:
    rng = random.Random(7)
    cfg = RouteConfig(error_rate=0.2)
    errors = sum(_decide(cfg, rng=rng) == "error" for _ in range(5000))
    assert 850 < errors < 1150


def test_sim_config_partial_update() -> None:
    cfg = SimConfig().merged({"routes": {"company": {"error_rate": 0.5}}})
    assert cfg.route("company").error_rate == 0.5
    assert cfg.route("chat").error_rate == 0.0
    cfg = cfg.merged({"default": {"latency_ms": 500}})
    assert cfg.route("chat").latency_ms == 500
