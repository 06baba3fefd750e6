"""Poison messages among good ones, on a real worker: each is quarantined (raw, with its queue
and the reason), the worker keeps its PID and serves every good message, and an operator can
list, show, replay and drop what was kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import redis as redis_lib

from proj import keys
from proj.sim.admin import SimAdmin
from tests.support import WorkerPool, wait_until

ROOT = Path(__file__).resolve().parents[2]
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _headers(task: str = "proj.ping", **changes: Any) -> dict[str, Any]:
    task_id = str(uuid.uuid4())
    h: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "origin": "chaos",
        "ignore_result": False,
    }
    h.update(changes)
    return {k: v for k, v in h.items() if v is not _DROP}


_DROP = object()
_GOOD_BODY = json.dumps([[], {}, _EMBED])

# (what is wrong, headers, body, content type, the kind the quarantine must give)
POISON: list[tuple[str, dict[str, Any], str | bytes, str, str]] = [
    ("body is an object", _headers(), json.dumps({"a": 1}), "application/json", "body"),
    (
        "timelimit not numbers",
        _headers(timelimit=["x", None]),
        _GOOD_BODY,
        "application/json",
        "headers",
    ),
    ("eta not a time", _headers(eta="soon"), _GOOD_BODY, "application/json", "headers"),
    ("expires a number", _headers(expires=12345), _GOOD_BODY, "application/json", "headers"),
    ("no id header", _headers(id=_DROP), _GOOD_BODY, "application/json", "headers"),
    ("id not text", _headers(id=123), _GOOD_BODY, "application/json", "headers"),
    ("no task header", {"lang": "py"}, _GOOD_BODY, "application/json", "headers"),
    ("unknown task", _headers("nobody.knows"), _GOOD_BODY, "application/json", "unknown_task"),
    ("wrong arity", _headers(), json.dumps([[1, 2], {}, _EMBED]), "application/json", "arguments"),
    ("pickle", _headers(), b"\x80\x04K\x01.", "application/x-python-serialize", "content"),
    ("not JSON", _headers(), "[[], {", "application/json", "content"),
]


def _publish(app: Any, headers: dict[str, Any], body: str | bytes, content_type: str) -> None:
    queue = app.amqp.queues["bulk"]
    with app.producer_or_acquire() as producer:
        producer.publish(
            body.encode() if isinstance(body, str) else body,
            exchange=queue.exchange,
            routing_key="bulk",
            declare=[queue],
            headers=headers,
            content_type=content_type,
            content_encoding="utf-8" if content_type == "application/json" else "binary",
        )


def _proj(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "proj"), *args],
        env={**os.environ, **(env or {}), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_poison_messages_are_quarantined_and_the_worker_serves_the_rest(
    workers: WorkerPool,
    redis_client: redis_lib.Redis,
    celery_app: Any,
    chaos_report: Any,
) -> None:
    from proj.tasks.demo import work

    proc = workers.start("w", ("bulk",), concurrency=2)
    pid = proc.pid
    good = []
    for n, (_, headers, body, content_type, _) in enumerate(POISON):
        good.append(work.delay(0))
        _publish(celery_app, headers, body, content_type)
        good.append(work.delay(0) if n % 2 else work.delay(0.01))
    wait_until(
        lambda: redis_client.zcard(keys.QUARANTINE_INDEX) >= len(POISON), 30, "the quarantine"
    )
    completed = sum(1 for r in good if r.get(timeout=30)["started_at"])
    assert proc.alive() and proc.pid == pid
    entries = [json.loads(v) for v in redis_client.hvals(keys.QUARANTINE)]
    by_task_id = {e["task_id"]: e for e in entries}
    for what, headers, _, _, kind in POISON:
        if isinstance(headers.get("id"), str):
            entry = by_task_id[headers["id"]]
            assert entry["kind"] == kind, (what, entry)
            assert entry["queue"] == "bulk"
    assert sorted(e["kind"] for e in entries) == sorted(p[4] for p in POISON)
    log = proc.log_path.read_text()
    assert "Traceback" not in log
    assert log.count("quarantined ") == len(POISON)
    chaos_report(
        submitted=len(good),
        completed=completed,
        lost=len(good) - completed,
        poison_sent=len(POISON),
        quarantined=len(entries),
        worker_exits=0 if proc.pid == pid and proc.alive() else 1,
    )


def test_quarantined_messages_are_listed_shown_replayed_and_dropped(
    workers: WorkerPool,
    sim: SimAdmin,
    redis_client: redis_lib.Redis,
    celery_app: Any,
) -> None:
    """A task the worker does not know is kept; once a worker that knows it runs, a replay
    runs it. Each entry is replayed by exactly one of two concurrent replays."""
    env = {"USER_API_URL": sim.base_url, "PYTHONPATH": str(ROOT)}
    workers.start("plain", ("bulk",), concurrency=1, env=env)
    task_id = str(uuid.uuid4())
    body = json.dumps([[7], {}, _EMBED])
    _publish(
        celery_app,
        _headers("usertasks.fetch", id=task_id, root_id=task_id),
        body,
        "application/json",
    )
    _publish(celery_app, _headers(timelimit="x"), _GOOD_BODY, "application/json")
    wait_until(lambda: redis_client.zcard(keys.QUARANTINE_INDEX) == 2, 30, "the quarantine")

    listing = _proj("quarantine", "list")
    assert listing.returncode == 0, listing.stderr
    assert "usertasks.fetch" in listing.stdout and "unknown_task" in listing.stdout
    entries = {json.loads(v)["kind"]: json.loads(v) for v in redis_client.hvals(keys.QUARANTINE)}
    unknown, bad = entries["unknown_task"], entries["headers"]
    shown = _proj("quarantine", "show", unknown["id"])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["body"] == body
    missing = _proj("quarantine", "show", "nope")
    assert missing.returncode == 2 and "no quarantined message 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr

    workers.start("knows", ("bulk",), concurrency=1, env=env, extra_args=("-I", "tests.usertasks"))
    workers.procs[0].terminate()
    workers.procs[0].stop(timeout_s=10)
    replays = [
        subprocess.Popen(
            [str(Path(sys.executable).parent / "proj"), "quarantine", "replay", unknown["id"]],
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in replays]
    # One replays it; the other finds it taken (before or after its own check).
    assert sorted(o for o, _ in outs)[-1] == "replayed 1 message(s)\n", outs
    loser_out, loser_err = sorted(outs)[0]
    assert loser_out == "replayed 0 message(s)\n" or "no quarantined message" in loser_err, outs
    assert celery_app.AsyncResult(task_id).get(timeout=30) == 7
    assert sim.count("source") == 1

    dropped = _proj("quarantine", "drop", bad["id"])
    assert dropped.returncode == 0 and "dropped 1" in dropped.stdout
    assert redis_client.zcard(keys.QUARANTINE_INDEX) == 0
