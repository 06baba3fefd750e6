"""Bad configuration, unreachable services and unknown ids end in one line and an exit
status, never a traceback: for `proj` commands and for `celery -A proj worker`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import clean_env

BIN = Path(sys.executable).parent


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=clean_env(COLUMNS="300", **env), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    text = (out.stdout + out.stderr).strip()
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if "SecurityWarning" not in line]
    errors = [line for line in lines if line.startswith(("error:", "Error:"))]
    assert len(errors) == 1, text
    return errors[0]


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"REDIS_URL": "foo"}, "REDIS_URL"),
        ({"PROJ_VISIBILITY_TIMEOUT_S": "abc"}, "PROJ_VISIBILITY_TIMEOUT_S"),
        ({"FLOWER_BASIC_AUTH": ":"}, "FLOWER_BASIC_AUTH"),
        ({"PROJ_DEPENDENCIES": '{"pay": {"rate": "fast"}}'}, "dependency 'pay': rate"),
    ],
)
@pytest.mark.parametrize("command", [["proj", "status"], ["proj", "batches"], ["celery"]])
def test_bad_configuration_is_one_line_and_exit_2(
    command: list[str], env: dict[str, str], names: str
) -> None:
    if command == ["celery"]:
        argv = [str(BIN / "celery"), "-A", "proj", "worker", "-P", "solo"]
    else:
        argv = [str(BIN / command[0]), *command[1:]]
    out = _run(argv, **env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert names in _one_line(out)


def test_unreachable_redis_is_one_line_with_the_password_hidden() -> None:
    out = _run([str(BIN / "proj"), "batches"], REDIS_URL="redis://ops:s3cret@127.0.0.1:1/0")
    assert out.returncode == 1
    line = _one_line(out)
    assert "cannot reach Redis at redis://ops:***@127.0.0.1:1/0" in line
    assert "s3cret" not in out.stdout + out.stderr


def test_unknown_batch_is_one_line(redis_server: object) -> None:
    url = redis_server.url  # type: ignore[attr-defined]
    for args in (["batch", "show", "nope"], ["batch", "resume", "nope"]):
        out = _run([str(BIN / "proj"), *args], REDIS_URL=url)
        assert out.returncode == 2
        assert "batch 'nope' not found" in _one_line(out)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PROJ_API_CALLBACK_ALLOW": "hooks.example.com, a/b"}, "PROJ_API_CALLBACK_ALLOW"),
        ({"PROJ_API_PORT": "http"}, "PROJ_API_PORT"),
        ({"PROJ_API_KEYS_FILE": "BROKEN"}, "keys.crm.sha256: must be 64 hex digits"),
    ],
)
def test_proj_api_with_bad_configuration_is_one_line_and_exit_2(
    env: dict[str, str], names: str, tmp_path: Path
) -> None:
    if env.get("PROJ_API_KEYS_FILE") == "BROKEN":
        broken = tmp_path / "keys.toml"
        broken.write_text('[keys.crm]\nsha256 = "not-a-hash"\n')
        env = {"PROJ_API_KEYS_FILE": str(broken)}
    out = _run([str(BIN / "proj"), "api", "--port", "1"], **env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert names in _one_line(out)
