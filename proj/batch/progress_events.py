"""A runner's batch progress as Celery events: every PROGRESS_EVERY_S, and once as it stops,
a ``task-progress`` event of the runner's own task (Celery's custom task events). Flower's
state machine then shows the runner in state PROGRESS with the counts in words; any event
receiver gets them as numbers (``docs/flower.md``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proj.batch.store import Progress

#: How often a runner reports its batch's progress.
PROGRESS_EVERY_S = 1.0
PROGRESS_EVENT = "task-progress"


def progress_fields(progress: Progress, runner_id: str) -> dict[str, Any]:
    """The fields of a runner's ``task-progress`` event. Flower's state machine makes the
    runner task's state PROGRESS and shows ``result`` (the counts in words) on its page until
    the task ends; event receivers get the counts as numbers."""
    pending = max(0, progress.total - progress.done - progress.failed)
    return {
        "batch_id": progress.batch_id,
        "pipeline": progress.pipeline,
        "runner": runner_id,
        "total": progress.total,
        "done": progress.done,
        "failed": progress.failed,
        "pending": pending,
        "in_flight": progress.in_flight,
        "status": progress.status,
        "result": (
            f"batch {progress.batch_id}: {progress.done} done, {progress.failed} failed, "
            f"{pending} pending of {progress.total}"
        ),
    }


def progress_sender(task: Any, runner_id: str) -> Callable[[Progress], None] | None:
    """Send progress as the runner task's own events, when the worker sends task events."""
    if not task.app.conf.worker_send_task_events or task.request.called_directly:
        return None
    # Captured here: the request is thread-local, and reports are sent from another thread.
    task_id, hostname = task.request.id, task.request.hostname

    def send(progress: Progress) -> None:
        with task.app.events.default_dispatcher(hostname=hostname) as dispatcher:
            dispatcher.send(PROGRESS_EVENT, uuid=task_id, **progress_fields(progress, runner_id))

    return send
