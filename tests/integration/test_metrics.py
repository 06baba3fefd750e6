"""Prometheus metrics from a real worker, Redis and the workers' task events, read back with
prometheus_client's own parser: in process, and from ``proj metrics`` over HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_lib
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import proj
from proj import batch, metrics
from proj.settings import get_settings
from proj.stack.procs import free_port
from proj.tasks import calls, demo
from tests.support import WorkerPool, wait_until
from tests.unit.test_monitoring_config import base_name, documented_metrics

Samples = dict[str, list[Sample]]


def _parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def _scrape(registry: CollectorRegistry) -> Samples:
    return _parse(generate_latest(registry).decode())


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    for s in samples.get(name, []):
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return None


@pytest.fixture
def scraped(celery_app: object) -> Iterator[tuple[CollectorRegistry, metrics.TaskEvents]]:
    registry, events = metrics.registry(get_settings(), celery_app)
    events.start()
    assert events.connected.wait(15), "the event stream did not start"
    yield registry, events
    events.stop()


def test_metrics_show_queues_tasks_breakers_and_adaptive_workers(
    workers: WorkerPool,
    provider_env: dict[str, str],
    redis_client: redis_lib.Redis,
    scraped: tuple[CollectorRegistry, metrics.TaskEvents],
) -> None:
    registry, _ = scraped
    n = 12
    results = [demo.ping.delay() for _ in range(n)]
    lookups = [calls.company.delay(f"m{i}.com") for i in range(3)]
    chat = calls.chat.delay([{"role": "user", "content": "hello"}], model="gpt-4o-mini")
    failed = demo.work.delay("not a number")  # raises TypeError in the task
    before = _scrape(registry)
    assert _value(before, "proj_queue_depth", queue="bulk") == n + 1 + 3 + 1  # no worker yet
    assert _value(before, "proj_queue_depth", queue="urgent") == 0
    assert _value(before, "proj_queue_depth", queue="quarantine") == 0

    small = batch.submit("company", [{"domain": "b1.com"}, {"domain": "b2.com"}], fresh=True)
    proj.breaker("metrics-demo").open()  # a transition this process sends as an event
    with pytest.raises(proj.BreakerOpen):
        proj.breaker("metrics-demo").call(lambda: None)  # refused
    limit = proj.limiter("metrics-limit", "1000/s")
    for _ in range(3):
        limit.acquire()
    workers.start("m", ("bulk",), concurrency=2, env=provider_env, extra_args=("--adaptive",))
    for r in results:
        assert r.get(timeout=30) == "pong"
    with pytest.raises(TypeError):
        failed.get(timeout=30)
    for r in lookups:
        r.get(timeout=30)
    answer = chat.get(timeout=30)
    assert small.wait(timeout_s=30).done == 2
    company = "proj.calls.company"

    def counted() -> bool:
        s = _scrape(registry)
        return (_value(s, "proj_tasks_total", task="proj.ping", state="succeeded") or 0) >= n

    wait_until(counted, 15, "the task events to be counted")
    after = _scrape(registry)
    assert _value(after, "proj_tasks_total", task="proj.ping", state="succeeded") == n
    assert _value(after, "proj_tasks_total", task="proj.work", state="failed") == 1
    assert _value(after, "proj_task_runtime_seconds_count", task="proj.ping") == n
    assert _value(after, "proj_queue_depth", queue="bulk") == 0

    def calls_counted() -> bool:  # each process sends its counts once a second
        s = _scrape(registry)
        return (
            _value(s, "proj_calls_total", outcome="success", pipeline=company) == 3
            and _value(s, "proj_calls_total", dependency="ai", outcome="success") == 1
            and _value(s, "proj_calls_total", dependency="company", pipeline="company") == 2
            and _value(s, "proj_breaker_refused_total", breaker="metrics-demo") == 1
            and _value(s, "proj_rate_limit_grants_total", limit="metrics-limit") == 3
        )

    wait_until(calls_counted, 10, "the call counts of the workers and of this process")
    after = _scrape(registry)
    assert _value(after, "proj_calls_total", dependency="ai", outcome="success") == 1
    # Each call is counted for the work that made it: the task, or the batch's pipeline.
    assert _value(after, "proj_calls_total", dependency="company", pipeline=company) == 3
    assert _value(after, "proj_calls_total", dependency="company", pipeline="company") == 2
    assert _value(after, "proj_calls_total", dependency="ai", pipeline="proj.calls.chat") == 1
    assert (
        _value(after, "proj_call_seconds_total", dependency="company", outcome="success") or 0
    ) > 0
    assert _value(after, "proj_breaker_refused_total", breaker="metrics-demo") == 1
    assert _value(after, "proj_rate_limit_grants_total", limit="metrics-limit") == 3
    assert _value(after, "proj_rate_limit_waited_seconds_total", limit="metrics-limit") is not None
    cost = _value(
        after,
        "proj_cost_usd_total",
        dependency="ai",
        model="gpt-4o-mini",
        pipeline="proj.calls.chat",
    )
    assert cost == pytest.approx(answer["usage"]["cost_usd"])
    prompt = _value(after, "proj_tokens_total", dependency="ai", model="gpt-4o-mini", kind="prompt")
    assert prompt == answer["usage"]["prompt_tokens"]
    assert _value(after, "proj_breaker_state", breaker="metrics-demo", state="open") == 1
    assert _value(after, "proj_breaker_state", breaker="metrics-demo", state="closed") == 0
    assert _value(after, "proj_breaker_transitions_total", breaker="metrics-demo", to="open") == 1
    node = WorkerPool.nodename("m")
    wait_until(
        lambda: _value(_scrape(registry), "proj_worker_pool_target", worker=node) is not None,
        15,
        "the adaptive worker's status",
    )
    assert _value(_scrape(registry), "proj_worker_pool_processes", worker=node) == 2
    # Every metric served is documented (docs/metrics.md), and every documented one served.
    text = generate_latest(registry).decode()
    served = {base_name(n) for n in re.findall(r"^# HELP (\S+) ", text, flags=re.M)}
    documented = {base_name(n) for n in documented_metrics()}
    assert served == documented, served ^ documented
    # Label sets are bounded: no task ids anywhere.
    ids = {r.id for r in results}
    assert not any(s.labels.get(k) in ids for v in after.values() for s in v for k in s.labels)


def test_proj_metrics_serves_over_http_and_stops_on_sigterm(
    redis_client: redis_lib.Redis, session_dir: Path
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proj.cli", "metrics", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def up() -> bool:
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "proj metrics to answer")
        text = httpx.get(url, timeout=5).text
        samples = _parse(text)
        assert _value(samples, "proj_queue_depth", queue="bulk") == 0
        for name in (
            "proj_tasks_total",
            "proj_task_runtime_seconds",
            "proj_rate_limit_wait_seconds",
        ):
            assert f"# HELP {name} " in text, name
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
