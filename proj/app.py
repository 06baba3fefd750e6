"""The Celery application. ``celery -A proj`` finds it as ``proj.app``."""

from __future__ import annotations

import os
import sys

from celery import Celery

from proj import broker_restart, signals, worker
from proj.errors import ConfigError
from proj.settings import get_settings


def _under_a_command() -> bool:
    """Whether this process is the ``celery`` command (``celery -A proj ...``) or ``proj``."""
    argv0 = sys.argv[0] if sys.argv else ""
    return os.path.basename(argv0) in ("celery", "proj") or argv0.endswith(
        os.path.join("celery", "__main__.py")
    )


# Under `celery` or `proj`, every setting is validated before Celery reads any, and a bad
# value is one line and exit status 2 (Celery would print the traceback of the import).
# Imported anywhere else, importing reads nothing: settings are read at first use (a bad
# value is then a ConfigError for the calling code), so a program may set the environment
# after `import proj`.
if _under_a_command():
    try:
        get_settings()
    except ConfigError as _err:
        sys.stderr.write(f"error: {_err}\n")
        raise SystemExit(2) from None

# task-sent events leave in batches from a background thread (proj/events.py).
# The router refuses an undeclared or full queue in proj's words (proj/amqp.py).
app = Celery(
    "proj",
    task_cls="proj.tasks.base:ProjTask",
    events="proj.events:Events",
    amqp="proj.amqp:AMQP",
)
app.config_from_object("proj.config.celeryconfig")
app.conf.include = [
    "proj.tasks.demo",
    "proj.tasks.calls",
    "proj.pipelines.leads",
    "proj.pipelines.documents",
    "proj.pipelines.aggregate",
    "proj.pipelines.notify",
    "proj.batch.runner",
    "proj.tasks.callbacks",
]
signals.connect(app)
worker.install(app)
broker_restart.install(app)  # workers survive a Redis restart on celery 5.7.0
app.steps["worker"].add("proj.batch.watchdog:BatchWatchdog")  # restarts batches whose runners died
