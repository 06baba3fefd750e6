"""Nothing reads the settings when proj is imported: a program may set a variable after
``import proj`` and the app, the Celery configuration and the tasks' retry options use it."""

from __future__ import annotations

import os
import subprocess
import sys

PROGRAM = """
import os
import proj
from proj.tasks import calls
import tests.usertasks as usertasks

os.environ["PROJ_TASK_MAX_RETRIES"] = "7"
os.environ["PROJ_VISIBILITY_TIMEOUT_S"] = "900"
os.environ["REDIS_URL"] = "redis://127.0.0.1:1/5"

from proj.app import app

assert calls.company.max_retries == 7, calls.company.max_retries
assert usertasks.charge.max_retries == 200  # a task's own value stays
assert app.conf.broker_url == "redis://127.0.0.1:1/5", app.conf.broker_url
assert app.conf.broker_transport_options["visibility_timeout"] == 900
from proj.settings import get_settings

assert get_settings().broker.visibility_timeout_s == 900
print("ok")
"""


def test_a_variable_set_after_import_is_used() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROJ_", "CELERY_", "FLOWER_")) and k != "REDIS_URL"
    }
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
