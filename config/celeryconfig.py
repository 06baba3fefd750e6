"""Every Celery setting proj uses, each with the reason it is set.

Values that an operator tunes come from :mod:`proj.settings`; this module only turns them
into Celery's names. Loaded by ``app.config_from_object("proj.config.celeryconfig")``.
"""

from proj import broker as _broker
from proj import keys as _keys
from proj import transport as _transport
from proj.settings import get_settings as _get_settings

_s = _get_settings()

# --- broker and results -----------------------------------------------------------------
# One Redis serves as broker and result backend unless CELERY_* overrides say otherwise.
broker_url = _s.broker.broker_url
result_backend = _s.broker.result_backend
# Say it explicitly: retry the broker connection at start-up (None only warns).
broker_connection_retry_on_startup = True
# Keep retrying a lost broker connection forever: workers outlive Redis restarts.
broker_connection_max_retries = None
# kombu's Redis transport with one redis-py client per channel, not one per command
# (proj/transport.py), as what redis:// means; rediss:// and the others keep kombu's own.
_transport.register()

_priority_steps = list(_keys.PRIORITY_STEPS)
# The Redis transport emulates priorities with one list per step. Steps start at 0 so a
# message with priority 0 lands in the top bucket (celery #8967); 'priority' order makes a
# worker drain a higher bucket before a lower one. visibility_timeout is the one value, set
# everywhere the transport reads it; unacked messages are swept every few seconds so a
# worker killed with SIGKILL gets its tasks redelivered about visibility_timeout later.
broker_transport_options = {
    "visibility_timeout": _s.broker.visibility_timeout_s,
    "priority_steps": _priority_steps,
    "queue_order_strategy": "priority",
    "unacked_restore_interval": max(1, min(10, _s.broker.visibility_timeout_s // 10)),
    "unacked_restore_throttle": 1,
    "health_check_interval": 25,
}
# On RabbitMQ (CELERY_BROKER_URL=amqp://...; Redis stays for results and state): publisher
# confirms, so .delay() returns once the broker has the message, and durable quorum queues
# (replicated, and a consumer that dies has its unacknowledged messages redelivered). Celery
# turns off global QoS for quorum queues (worker_detect_quorum_queues) and sends countdowns
# through RabbitMQ's delayed delivery. RabbitMQ 3.10's quorum queues have no priorities:
# priority still routes (rule 4 of proj/routing.py) but does not reorder inside a queue.
if _broker.is_amqp(_s.broker.broker_url):
    broker_transport_options = {
        "confirm_publish": True,
        # A connection opened while the node restarts (a .delay() whose connection was
        # reset) keeps trying for a minute, as the publish retry below does, not kombu's
        # 4 s (the connect timeout; a node takes 7-9 s to come back).
        "connect_retries_timeout": 60,
        "interval_start": 0.2,
        "interval_step": 0.2,
        "interval_max": 1.0,
    }
    task_default_queue_type = "quorum"
# The result backend reads the same option name; keep it identical.
result_backend_transport_options = {
    "visibility_timeout": _s.broker.visibility_timeout_s,
    "retry_policy": {"timeout": 5.0},
}
# A .delay() while Redis restarts waits for it (retries up to about 14 s) instead of raising
# after Celery's default 0.6 s (tests/chaos/test_broker_restart.py publishes through one).
task_publish_retry_policy = {
    "max_retries": 30,
    "interval_start": 0.1,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
if _broker.is_amqp(_s.broker.broker_url):
    # A RabbitMQ node takes longer to come back: 7-9 s to boot on an idle 2-core host, more on
    # a busy one (tests/integration/test_rabbitmq.py restarts one mid-stream). A .delay() waits
    # up to about a minute for it.
    task_publish_retry_policy = {
        **task_publish_retry_policy,
        "max_retries": 65,
        "interval_max": 1.0,
    }
# Results are forgotten after a day so Redis does not grow without bound.
result_expires = _s.broker.result_expires_s
# Store task name, args and queue with the result so Flower and `proj` can show them.
result_extended = True

# --- serialisation: JSON only, pickle is never accepted -----------------------------------
task_serializer = "json"
result_serializer = "json"
event_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# --- delivery guarantees ----------------------------------------------------------------
# Ack after the task ran, so a crash before the end redelivers it ...
task_acks_late = True
# ... and a pool child killed mid-task (SIGKILL, OOM) requeues it instead of failing it.
task_reject_on_worker_lost = True
# A worker reserves only what it can run: -c N holds N tasks, so urgent work is never stuck
# behind tasks prefetched by a busy worker, and priority reorders what is still in Redis.
worker_prefetch_multiplier = 1
# When the broker connection drops, let running tasks finish: they are acked after the
# reconnect. Cancelling them (True, the Celery 6 default) loses them on Redis: celery 5.7.0
# records the cancel in Redis, which is down (worker/request.py:453), so the terminated task
# counts as revoked, stored REVOKED and acked (request.py:661-672): 2 tasks lost per -c 2
# worker per Redis restart (tests/chaos/test_broker_restart.py).
worker_cancel_long_running_tasks_on_connection_loss = False
# ... and a result written while Redis is down waits for it instead of failing the task
# (without this, a task that ends during a restart is stored as FAILURE: ConnectionError).
# Retries are at most 1 s apart; this also makes a client's state read wait for Redis
# rather than raise at once.
result_backend_always_retry = True
result_backend_max_sleep_between_retries_ms = 1000
# ... for about two minutes, not forever (Celery's default): past that, a Redis that is still
# down is an error the caller sees.
result_backend_max_retries = 120
# Every task has a soft limit (a catchable SoftTimeLimitExceeded) and a hard limit below the
# visibility timeout, so no task can outlive its message's reservation.
task_soft_time_limit = _s.broker.task_soft_time_limit_s
task_time_limit = _s.broker.task_time_limit_s

# --- queues and routing -----------------------------------------------------------------
task_default_queue = _s.queues.bulk_queue
task_default_exchange = "proj"
task_default_routing_key = _s.queues.bulk_queue
# Untagged messages would count as 0, the top bucket; give them a middle priority instead.
task_default_priority = _s.queues.default_priority
# Every declared queue (config/queues.toml, PROJ_QUEUES_FILE, PROJ_QUEUES); urgent and bulk
# always. Publishing to another, or starting a worker on one, fails with one line naming these.
task_queues = tuple(_broker.queue_for(name, _s.broker.broker_url) for name in _s.queue_config.names)
# The triage router picks the queue of every message (proj/routing.py).
task_routes = ("proj.tasks.router.route_task",)
# A typo in a queue name is an error, not a new queue.
task_create_missing_queues = False

# --- visibility: Flower and `proj status` see everything ---------------------------------
worker_send_task_events = True
task_send_sent_event = True
# STARTED in the result backend is a Redis write (and a read) per task, for every task: off
# by default, as in Celery. Flower and `proj status` see starts from the task-started events;
# tasks someone follows one by one (batch runners, document analysis, a lead's enrichment)
# declare @app.task(track_started=True). bench/dispatch.py: with it on for every task, a no-op
# ran at 1.26x of bare Celery; off, 1.09x.
task_track_started = False
# Task events go out in batches every 0.1 s instead of one PUBLISH each (proj/worker.py).
worker_consumer = "proj.worker:Consumer"
# Name every worker process in `ps` output.
worker_proc_alive_timeout = 10.0
