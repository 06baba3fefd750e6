"""No secret of a ``proj up`` deployment in any file it writes, and no service of it open
without its secret: a batch runs through workers that call the provider and a webhook whose
URL holds a token, then every file under the state directory (logs of every process, Redis
data, the results database) is read for each secret and its mode checked."""

from __future__ import annotations

import base64
import re
import secrets
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from tests.e2e.conftest import alive, clean_env, descendants, proj_exe, read_until, stop_up

ROOT = Path(__file__).resolve().parents[2]


class _Webhook(BaseHTTPRequestHandler):
    """Answers 200 to every POST and remembers the paths it was sent to."""

    paths: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Webhook]]]:
    """A webhook receiver on a free port: (base URL, handler class with the paths seen)."""
    handler = type("Webhook", (_Webhook,), {"paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def _files_and_dirs(top: Path) -> tuple[list[Path], list[Path]]:
    files: list[Path] = []
    dirs = [top]
    for path in sorted(top.rglob("*")):
        (dirs if path.is_dir() else files).append(path)
    return files, dirs


@pytest.mark.slow
def test_up_writes_no_secret_and_no_service_is_open_without_one(
    tmp_path: Path, webhook: tuple[str, type[_Webhook]]
) -> None:
    hook_url, hook = webhook
    path_token, query_token = secrets.token_hex(12), secrets.token_hex(12)
    provider_key = "sk-provider-" + secrets.token_hex(12)
    flower_password = "flower-" + secrets.token_hex(12)
    state = tmp_path / "state"
    env = clean_env(
        PROJ_STATE_DIR=str(state),
        PROJ_URGENT_CONCURRENCY="1",
        PROJ_BULK_CONCURRENCY="2",
        FLOWER_BASIC_AUTH=f"ops:{flower_password}",
        PROVIDER_API_KEY=provider_key,
        PROJ_NOTIFY_WEBHOOK_URL=f"{hook_url}/hooks/{path_token}?token={query_token}",
    )
    proc = subprocess.Popen(
        [proj_exe(), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out = read_until(proc, "press Ctrl-C", timeout_s=90)
        redis_url = re.search(r"REDIS_URL for clients: (\S+)", out)
        sim = re.search(r"sim\s+(http://\S+).*X-Admin-Key: ([\w-]+)", out)
        assert redis_url and sim, out
        redis_url_, (sim_url, admin_key) = redis_url.group(1), sim.groups()
        redis_password = urlsplit(redis_url_).password
        assert redis_password and len(redis_password) >= 24
        assert out.count(redis_password) == 1  # printed once, for clients
        found = [
            provider_key,
            path_token,
            query_token,
            flower_password,
            base64.b64encode(f"ops:{flower_password}".encode()).decode(),
            redis_password,
            admin_key,
        ]
        for pid in descendants(proc.pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if alive(pid) else b""
            assert not [s for s in found if s.encode() in cmdline], cmdline

        # Nothing answers without its secret.
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(redis_url_.replace(f":{redis_password}@", "")).ping()
        assert redis.Redis.from_url(redis_url_).ping()
        assert httpx.get(f"{sim_url}/admin/stats", timeout=5).status_code == 401
        wrong = {"X-Admin-Key": "not-" + admin_key}
        assert httpx.get(f"{sim_url}/admin/stats", headers=wrong, timeout=5).status_code == 401
        right = {"X-Admin-Key": admin_key}
        assert httpx.get(f"{sim_url}/admin/stats", headers=right, timeout=5).status_code == 200

        # A batch through the workers: provider calls with the key, the webhook with its token.
        leads = tmp_path / "leads.jsonl"
        sample = (ROOT / "proj" / "data" / "sample_leads.jsonl").read_text().splitlines()
        leads.write_text("\n".join(sample[:3]) + "\n")
        client_env = clean_env(REDIS_URL=redis_url_, PROJ_STATE_DIR=str(state))
        submit = subprocess.run(
            [proj_exe(), "submit", str(leads), "--pipeline", "leads"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert submit.returncode == 0, submit.stdout + submit.stderr
        assert not [s for s in found if s in submit.stdout + submit.stderr]
        assert [p for p in hook.paths if path_token in p and query_token in p], hook.paths
    finally:
        stop_up(proc)
    assert proc.returncode == 0

    files, dirs = _files_and_dirs(state)
    names = {p.relative_to(state).as_posix() for p in files}
    assert {"logs/bulk.log", "logs/flower.log", "logs/sim.log", "redis/redis.log"} <= names
    assert "proj.sqlite3" in names
    bulk_log = (state / "logs" / "bulk.log").read_text()
    assert "proj.batch" in bulk_log and "succeeded" in bulk_log  # INFO lines were written
    for path in files:
        data = path.read_bytes()
        leaked = [s for s in found if s.encode() in data]
        assert not leaked, f"{path.relative_to(state)} holds a secret"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in dirs:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
