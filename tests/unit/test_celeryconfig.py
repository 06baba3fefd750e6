"""The Celery configuration holds the guarantees the design relies on."""

from __future__ import annotations

import pytest

from proj import app
from proj.settings import get_settings, reset_settings


def test_config_accepts_json_only() -> None:
    c = app.conf
    assert c.task_serializer == c.result_serializer == c.event_serializer == "json"
    assert list(c.accept_content) == ["json"]
    assert list(c.result_accept_content) == ["json"]


def test_config_acks_late_and_requeues_on_worker_loss() -> None:
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True


def test_config_worker_reserves_only_what_it_runs() -> None:
    assert app.conf.worker_prefetch_multiplier == 1


def test_config_priorities_start_at_zero_and_drain_in_order() -> None:
    opts = app.conf.broker_transport_options
    assert opts["priority_steps"][0] == 0
    assert opts["queue_order_strategy"] == "priority"
    assert app.conf.task_default_priority is not None
    assert app.conf.task_default_priority in opts["priority_steps"]


def test_config_one_visibility_timeout_everywhere() -> None:
    s = get_settings()
    vt = s.broker.visibility_timeout_s
    assert app.conf.broker_transport_options["visibility_timeout"] == vt
    assert app.conf.result_backend_transport_options["visibility_timeout"] == vt
    assert app.conf.task_time_limit < vt
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit
    assert s.broker.max_countdown_s < vt
    # The sweep that redelivers a dead worker's messages runs well within the timeout.
    opts = app.conf.broker_transport_options
    assert opts["unacked_restore_interval"] * opts["unacked_restore_throttle"] <= max(1, vt // 10)


def test_config_explicit_startup_retry_expiry_and_events() -> None:
    assert app.conf.broker_connection_retry_on_startup is True
    assert app.conf.result_expires == get_settings().broker.result_expires_s
    assert app.conf.worker_send_task_events is True
    assert app.conf.task_send_sent_event is True


def test_task_events_are_buffered_in_bigger_batches_than_celery_s() -> None:
    """A worker's task events leave in batches of up to BUFFER_LIMIT (Celery: 24); a caller
    that names its own limit keeps it."""
    from proj.events import BUFFER_LIMIT, EventDispatcher

    dispatcher = app.events.Dispatcher(enabled=False, buffer_group=["task"])
    assert isinstance(dispatcher, EventDispatcher)
    assert dispatcher.buffer_limit == BUFFER_LIMIT > 24
    assert app.events.Dispatcher(enabled=False, buffer_limit=5).buffer_limit == 5


def test_config_declares_the_declared_queues() -> None:
    """urgent and bulk, and compliance (the documents pipeline's review step): the queues of
    config/queues.toml."""
    names = {q.name for q in app.conf.task_queues}
    assert names == {"urgent", "bulk", "compliance"}
    assert app.conf.task_default_queue == "bulk"


def test_started_is_recorded_only_for_tasks_someone_follows() -> None:
    """STARTED costs a result-backend write per task: off by default, on where declared."""
    import proj.batch.runner
    import proj.pipelines.documents
    import proj.pipelines.leads
    import proj.tasks.calls
    import proj.tasks.demo  # noqa: F401  (registers the tasks)

    assert app.conf.task_track_started is False
    followed = {"proj.batch.run", "proj.documents.aspect", "proj.leads.enrich_lead", "proj.work"}
    assert all(app.tasks[name].track_started for name in followed)
    assert not app.tasks["proj.ping"].track_started
    assert not app.tasks["proj.calls.company"].track_started


def test_redis_urls_get_proj_s_transport_and_still_call_themselves_redis() -> None:
    """One client per channel (proj/transport.py), under the ``redis`` name Flower reads."""
    from proj.transport import Transport

    with app.connection() as conn:
        assert type(conn.transport) is Transport
        assert conn.as_uri().startswith("redis://")


def test_the_config_module_holds_celery_settings_only() -> None:
    """Celery reads every public name of the module as a setting: nothing else is public."""
    import proj.config.celeryconfig as module
    from celery.app.defaults import NAMESPACES, flatten

    known = {name for name, _ in flatten(NAMESPACES)}
    public = {name for name in dir(module) if not name.startswith("_")}
    assert public <= known, public - known


def test_on_rabbitmq_a_publish_waits_about_a_minute_for_the_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A RabbitMQ node takes longer to restart than Redis: .delay() retries for longer."""
    import importlib

    import proj.config.celeryconfig as module

    def budget_s(policy: dict[str, float]) -> float:
        waits = (
            min(policy["interval_start"] + i * policy["interval_step"], policy["interval_max"])
            for i in range(int(policy["max_retries"]))
        )
        return sum(waits)

    assert 10 <= budget_s(module.task_publish_retry_policy) <= 20  # Redis
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5999//")
    reset_settings()
    try:
        amqp = importlib.reload(module)
        assert 50 <= budget_s(amqp.task_publish_retry_policy) <= 90
        options = amqp.broker_transport_options
        assert options["confirm_publish"] is True
        # a connection opened mid-restart (kombu's default_channel) tries as long as a publish
        assert 50 <= options["connect_retries_timeout"] <= 90
        assert options["interval_max"] <= 2
    finally:
        monkeypatch.delenv("CELERY_BROKER_URL")
        reset_settings()
        importlib.reload(module)
