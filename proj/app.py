"""The Celery application. ``celery -A proj`` finds it as ``proj.app``."""

from __future__ import annotations

from celery import Celery

from proj import signals, worker

app = Celery("proj", task_cls="proj.tasks.base:ProjTask")
app.config_from_object("proj.config.celeryconfig")
app.conf.include = [
    "proj.tasks.demo",
    "proj.tasks.calls",
    "proj.pipelines.leads",
    "proj.pipelines.documents",
    "proj.pipelines.aggregate",
    "proj.pipelines.notify",
    "proj.batch.runner",
]
signals.connect()
worker.install(app)
