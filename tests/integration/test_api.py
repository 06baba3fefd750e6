"""``proj api`` against the real service: a ``proj api`` process on a free port, real workers,
the simulator as the provider, and a callback receiver on loopback; a real HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_lib

from proj import keys as proj_keys
from proj.api.keys import toml_entry
from proj.sim.admin import SimAdmin
from proj.stack.procs import ManagedProcess, free_port
from proj.webhooks import verify
from tests.support import WorkerPool, wait_until

pytestmark = pytest.mark.slow

SECRET = "whsec-test-0123456789"
FULL, READER, LIMITED = "pk_full_" + "a" * 30, "pk_reader_" + "b" * 30, "pk_limited_" + "c" * 30


class Receiver:
    """Records the callbacks POSTed to it; answers each status of ``answers`` in turn, then 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.calls.append((dict(self.headers), body))
                status = outer.answers.pop(0) if outer.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def api_env(provider_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    keys_file = tmp_path / "api_keys.toml"
    keys_file.write_text(
        toml_entry("full", FULL, ["*"], None)
        + toml_entry("reader", READER, ["batches:read"], None)
        + toml_entry("limited", LIMITED, ["batches:read", "tasks:write", "tasks:read"], "2/m")
    )
    return {
        **provider_env,
        "PROJ_API_KEYS_FILE": str(keys_file),
        "PROJ_API_CALLBACK_SECRET": SECRET,
        "PROJ_API_CALLBACK_ALLOW": "127.0.0.1,localhost",
        "PROJ_API_MAX_BODY_BYTES": "20000",
        "PROJ_API_MAX_ITEMS": "50",
    }


@contextlib.contextmanager
def _serve(env: dict[str, str], log: Path) -> Iterator[str]:
    """A ``proj api`` process on a free port, with the test's user tasks; its URL."""
    port = free_port()
    argv = [str(Path(sys.executable).parent / "proj"), "api", "--port", str(port)]
    proc = ManagedProcess(
        "api", [*argv, "-I", "tests.usertasks"], env={**os.environ, **env}, log_path=log
    ).start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not proc.alive():
            raise AssertionError(f"proj api exited:\n{proc.log_tail()}")
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 30, "proj api")
        yield url
    finally:
        proc.stop()


@pytest.fixture
def api(api_env: dict[str, str], redis_client: redis_lib.Redis, tmp_path: Path) -> Iterator[str]:
    with _serve(api_env, tmp_path / "api.log") as url:
        yield url


def _client(url: str, key: str | None = FULL) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def _domains(n: int, tag: str = "") -> list[dict[str, str]]:
    return [{"domain": f"acme{tag}{i}.com"} for i in range(n)]


def _events(c: httpx.Client, batch_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Read the batch's server-sent events until the stream ends."""
    out: list[tuple[str, dict[str, Any]]] = []
    event = ""
    with c.stream("GET", f"/v1/batches/{batch_id}/events", timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                out.append((event, json.loads(line.split(":", 1)[1])))
    return out


def test_submit_follow_results_and_a_signed_callback_that_is_retried(
    api: str,
    api_env: dict[str, str],
    workers: WorkerPool,
    sim: SimAdmin,
    receiver: Receiver,
) -> None:
    workers.start("bulk", ("bulk",), concurrency=2, env=api_env)
    receiver.answers = [503]  # the first try fails: the callback is sent again
    with _client(api) as c:
        r = c.post(
            "/v1/batches",
            json={"pipeline": "company", "items": _domains(6), "callback_url": receiver.url},
        )
        assert r.status_code == 202, r.text
        body = r.json()
        batch_id = body["batch_id"]
        assert body["accepted"] == 6 and body["rejected"] == []
        assert r.headers["location"] == body["status_url"]
        assert body["status_url"].endswith(f"/v1/batches/{batch_id}")

        events = _events(c, batch_id)
        assert events[-1][0] == "finished"
        assert events[-1][1]["done"] == 6 and events[-1][1]["status"] == "finished"
        assert all(e == "progress" for e, _ in events[:-1])

        state = c.get(f"/v1/batches/{batch_id}").json()
        assert (state["total"], state["done"], state["failed"]) == (6, 6, 0)
        assert state["fraction_done"] == 1.0

        lines = c.get(f"/v1/batches/{batch_id}/results").text.splitlines()
        rows = [json.loads(x) for x in lines]
        assert [row["index"] for row in rows] == list(range(6))
        assert all(row["status"] == "done" and row["result"] for row in rows)
        rest = c.get(f"/v1/batches/{batch_id}/results", params={"cursor": 4}).text.splitlines()
        assert [json.loads(x)["index"] for x in rest] == [4, 5]
        two = c.get(f"/v1/batches/{batch_id}/results", params={"cursor": 1, "limit": 2})
        assert [json.loads(x)["index"] for x in two.text.splitlines()] == [1, 2]

        wait_until(lambda: len(receiver.calls) >= 2, 60, "the callback, tried twice")
        headers, raw = receiver.calls[-1]
        assert verify(SECRET, raw, headers["Proj-Signature"])
        assert not verify("another-secret", raw, headers["Proj-Signature"])
        t, v1 = (p.split("=", 1)[1] for p in headers["Proj-Signature"].split(","))
        mac = hmac.new(SECRET.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, mac)  # as a receiver in any language checks it
        payload = json.loads(raw)
        assert payload["event"] == "batch.finished"
        assert payload["batch"]["batch_id"] == batch_id and payload["batch"]["done"] == 6
        assert payload["results_url"] == body["results_url"]

        def delivered() -> bool:
            cb = c.get(f"/v1/batches/{batch_id}").json()["callback"]
            return cb is not None and cb["status"] == "delivered"

        wait_until(delivered, 10, "the callback's outcome on the batch")
    assert sim.count("company") == 6


def test_a_retried_request_with_the_same_idempotency_key_makes_one_batch(
    api: str,
    api_env: dict[str, str],
    workers: WorkerPool,
    sim: SimAdmin,
    redis_client: redis_lib.Redis,
) -> None:
    workers.start("bulk", ("bulk",), concurrency=2, env=api_env)
    request = {"pipeline": "company", "items": _domains(4, "idem")}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=api, headers={"Authorization": f"Bearer {FULL}"}, timeout=30
        ) as c:
            return await asyncio.gather(
                *(
                    c.post("/v1/batches", json=request, headers={"Idempotency-Key": "k1"})
                    for _ in range(6)
                )
            )

    answers = asyncio.run(burst())
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["batch_id"] for r in answers}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in answers) == 5
    batch_id = answers[0].json()["batch_id"]
    with _client(api) as c:
        assert _events(c, batch_id)[-1][1]["done"] == 4
        again = c.post("/v1/batches", json=request, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 202 and again.json()["batch_id"] == batch_id
        assert again.json()["accepted"] == 4
        other = c.post(
            "/v1/batches",
            json={**request, "items": _domains(2, "x")},
            headers={"Idempotency-Key": "k1"},
        )
        assert other.status_code == 422
        assert "Idempotency-Key 'k1' was used for a different request" in other.json()["error"]
    assert redis_client.zcard(proj_keys.BATCHES) == 1
    assert sim.count("company") == 4


def test_one_invalid_item_answers_422_naming_it_and_queues_nothing(
    api: str, redis_client: redis_lib.Redis
) -> None:
    items: list[Any] = [*_domains(3), {"domain": ""}, "not an object"]
    with _client(api) as c:
        r = c.post("/v1/batches", json={"pipeline": "company", "items": items})
        assert r.status_code == 422
        body = r.json()
        assert "nothing was queued" in body["error"]
        assert [e["index"] for e in body["errors"]] == [3, 4]
        assert body["errors"][0]["field"] == "domain" and body["errors"][0]["value"] == ""
        assert redis_client.zcard(proj_keys.BATCHES) == 0
        partial = c.post(
            "/v1/batches", json={"pipeline": "company", "items": items, "partial": True}
        )
        assert partial.status_code == 202
        assert partial.json()["accepted"] == 3
        assert [e["index"] for e in partial.json()["rejected"]] == [3, 4]


def test_every_refusal_is_json_with_one_clear_message(api: str) -> None:
    ok = {"pipeline": "company", "items": _domains(1)}
    with _client(api, key=None) as anon, _client(api, key="pk_wrong") as wrong:
        r = anon.post("/v1/batches", json=ok)
        assert (r.status_code, r.headers["www-authenticate"]) == (401, "Bearer")
        assert r.json() == {"error": "no API key: send Authorization: Bearer <key>"}
        assert wrong.get("/v1/batches/x").json() == {"error": "unknown API key"}
        # A stranger's body is refused for the key before it is read: over the cap by its
        # Content-Length (413, nothing read), or under it (401, and the connection closed).
        huge = anon.post("/v1/batches", json={"pipeline": "company", "items": _domains(1000)})
        assert huge.status_code == 413
        some = anon.post("/v1/batches", json={"pipeline": "company", "items": _domains(100)})
        assert some.status_code == 401 and some.headers["connection"] == "close"
        assert wrong.post("/v1/tasks/usertasks.add", json={}).status_code == 401
    with _client(api, key=READER) as reader:
        r = reader.post("/v1/batches", json=ok)
        assert r.status_code == 403
        assert r.json()["error"] == "API key 'reader' does not have the scope 'batches:write'"
    with _client(api) as c:
        big = c.post("/v1/batches", json={"pipeline": "company", "items": _domains(1000)})
        assert big.status_code == 413 and "PROJ_API_MAX_BODY_BYTES" in big.json()["error"]
        many = c.post("/v1/batches", json={"pipeline": "company", "items": _domains(60)})
        assert many.status_code == 413
        assert many.json()["error"] == "items: 60 items; at most 50 per batch (PROJ_API_MAX_ITEMS)"
        chunked = c.post(
            "/v1/batches",
            content=iter([b'{"pipeline": "company", "items": [', b" " * 30000, b"]}"]),
            headers={"Content-Type": "application/json"},
        )
        assert chunked.status_code == 413  # no Content-Length: cut off while it streams
        bad_json = c.post(
            "/v1/batches", content=b'{"pipeline": ', headers={"Content-Type": "application/json"}
        )
        assert bad_json.status_code == 422 and "not valid JSON" in bad_json.json()["error"]
        no_items = c.post("/v1/batches", json={"pipeline": "company"})
        assert no_items.status_code == 422
        assert no_items.json()["error"].startswith("items: Field required")
        unknown = c.post("/v1/batches", json={"pipeline": "nope", "items": _domains(1)})
        assert unknown.status_code == 422
        assert unknown.json()["error"].startswith("pipeline: 'nope' is not a pipeline; known: ")
        for url, why in (
            ("http://169.254.169.254/latest/meta-data", "not on PROJ_API_CALLBACK_ALLOW"),
            ("http://example.com/hook", "host 'example.com' is not on PROJ_API_CALLBACK_ALLOW"),
            ("ftp://127.0.0.1/x", "is not an http(s) URL"),
        ):
            r = c.post("/v1/batches", json={**ok, "callback_url": url})
            assert r.status_code == 422 and why in r.json()["error"], r.text
            assert r.json()["error"].startswith("callback_url: ")
        missing = c.get("/v1/batches/0123456789abcdef")
        assert missing.status_code == 404 and "not found" in missing.json()["error"]
        mine = c.post("/v1/batches", json=ok).json()["batch_id"]
    with _client(api, key=LIMITED) as limited:
        assert limited.get(f"/v1/batches/{mine}").status_code == 404  # not theirs
        answers = [limited.get("/v1/batches/0123456789abcdef") for _ in range(2)]
        assert [a.status_code for a in answers] == [404, 429]  # "2/m": a burst of 2, then wait
        assert int(answers[1].headers["retry-after"]) >= 1
        assert answers[1].json()["error"].startswith("API key 'limited' is over its rate limit")


def test_exposed_tasks_only_with_their_arguments_checked(
    api: str, api_env: dict[str, str], workers: WorkerPool
) -> None:
    workers.start(
        "bulk", ("bulk",), concurrency=1, env=api_env, extra_args=("-I", "tests.usertasks")
    )
    with _client(api) as c:
        r = c.post("/v1/tasks/usertasks.add", json={"args": [2], "kwargs": {"y": 3}})
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]

        def finished() -> bool:
            return c.get(f"/v1/tasks/{task_id}").json()["state"] == "SUCCESS"

        wait_until(finished, 30, "the exposed task")
        assert c.get(f"/v1/tasks/{task_id}").json() == {
            "task_id": task_id,
            "task": "usertasks.add",
            "state": "SUCCESS",
            "result": 5,
        }
        for name in ("usertasks.lookup", "proj.calls.company", "celery.backend_cleanup", "nope"):
            r = c.post(f"/v1/tasks/{name}", json={"args": []})
            assert r.status_code == 404
            assert r.json() == {"error": f"no exposed task is called {name!r}"}
        wrong_type = c.post("/v1/tasks/usertasks.add", json={"args": ["2"]})
        assert wrong_type.status_code == 422
        assert wrong_type.json()["error"].startswith(
            "usertasks.add: x: Input should be a valid integer, got '2'"
        )
        missing = c.post("/v1/tasks/usertasks.add", json={"kwargs": {"y": 1}})
        assert missing.status_code == 422
        assert "missing a required argument: 'x'" in missing.json()["error"]
        extra = c.post("/v1/tasks/usertasks.add", json={"args": [1], "kwargs": {"z": 1}})
        assert extra.status_code == 422 and "'z'" in extra.json()["error"]
        assert c.get("/v1/tasks/not-a-task-id").status_code == 404
    with _client(api, key=LIMITED) as other:
        assert other.get(f"/v1/tasks/{task_id}").status_code == 404  # not theirs


def test_health_readiness_and_the_schema(api: str) -> None:
    assert httpx.get(api + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(api + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    schema = httpx.get(api + "/openapi.json").json()
    for path in (
        "/v1/batches",
        "/v1/batches/{batch_id}",
        "/v1/batches/{batch_id}/results",
        "/v1/batches/{batch_id}/events",
        "/v1/tasks/{name}",
        "/v1/tasks/{task_id}",
    ):
        assert path in schema["paths"]
    assert "BatchRequest" in schema["components"]["schemas"]


def test_a_listed_name_that_resolves_to_loopback_is_not_called(
    api: str, api_env: dict[str, str], workers: WorkerPool, receiver: Receiver
) -> None:
    # The API accepts http://localhost (the name is listed); the worker resolves it to
    # 127.0.0.1, which its own list does not name, and refuses to call it.
    workers.start(
        "bulk", ("bulk",), concurrency=2, env={**api_env, "PROJ_API_CALLBACK_ALLOW": "localhost"}
    )
    url = receiver.url.replace("127.0.0.1", "localhost")
    with _client(api) as c:
        r = c.post(
            "/v1/batches", json={"pipeline": "company", "items": _domains(1), "callback_url": url}
        )
        assert r.status_code == 202, r.text
        batch_id = r.json()["batch_id"]
        _events(c, batch_id)

        def settled() -> dict[str, Any] | None:
            cb: dict[str, Any] | None = c.get(f"/v1/batches/{batch_id}").json()["callback"]
            return cb

        wait_until(lambda: settled() is not None, 30, "the callback's outcome")
        cb = settled()
        assert cb is not None and cb["status"] == "refused"
        assert "resolves to 127.0.0.1, which is not a public address" in cb["detail"]
    assert receiver.calls == []


def _readme_example() -> str:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("<!-- webhook-example", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return "\n".join(line for line in block.splitlines() if not line.startswith("export "))


def test_the_readme_webhook_example_runs_as_written(
    api: str, api_env: dict[str, str], workers: WorkerPool, receiver: Receiver, tmp_path: Path
) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: the README's example uses it")
    workers.start("bulk", ("bulk",), concurrency=2, env=api_env)
    script = tmp_path / "example.sh"
    script.write_text("set -euo pipefail\n" + _readme_example())
    out = subprocess.run(
        ["bash", str(script)],
        env={**os.environ, "API": api, "KEY": FULL, "HOOK": receiver.url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "event: finished" in out.stdout
    results = [json.loads(x) for x in out.stdout.splitlines() if x.startswith('{"index"')]
    assert [r["index"] for r in results] == [0, 1]
    assert all(r["status"] == "done" for r in results)
    wait_until(lambda: receiver.calls, 30, "the callback")
    headers, raw = receiver.calls[0]
    assert verify(SECRET, raw, headers["Proj-Signature"])
    payload = json.loads(raw)
    assert payload["batch"]["done"] == 2
    assert {"pipeline", "items", "stored", "top_prospects", "cost_usd"} <= set(payload["summary"])
    assert payload["summary"]["items"] == 2 and payload["api_key"] == "full"


def test_readiness_names_what_is_unreachable(api_env: dict[str, str], tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with _serve({**api_env, "REDIS_URL": dead}, tmp_path / "api.log") as url:
        ready = httpx.get(url + "/readyz", timeout=15)
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not ready"
        assert body["redis"].startswith("unreachable") and body["broker"].startswith("unreachable")
        assert body["error"].startswith("redis unreachable")
        r = httpx.post(
            url + "/v1/batches",
            json={"pipeline": "company", "items": _domains(1)},
            headers={"Authorization": f"Bearer {FULL}"},
            timeout=30,
        )
        assert r.status_code == 503, r.text
        assert r.json() == {"error": "Redis is unreachable; nothing was changed, try again"}


def test_results_name_each_item_by_its_place_in_the_request(
    api: str, api_env: dict[str, str], workers: WorkerPool
) -> None:
    # An invalid item and a repeat are left out of the batch: each result still names the
    # place its item had in the request, and a repeat's other places.
    items: list[Any] = [
        {"domain": "one.com"},
        {"domain": ""},
        {"domain": "one.com"},
        {"domain": "two.com"},
    ]
    request = {"pipeline": "company", "items": items, "partial": True}
    with _client(api) as c:
        first = c.post("/v1/batches", json=request, headers={"Idempotency-Key": "places"})
        assert first.status_code == 202, first.text
        assert (first.json()["accepted"], first.json()["duplicates"]) == (2, 1)
        assert [e["index"] for e in first.json()["rejected"]] == [1]
        again = c.post("/v1/batches", json=request, headers={"Idempotency-Key": "places"})
        assert again.json() == first.json()  # the same answer, rejections included
        workers.start("bulk", ("bulk",), concurrency=2, env=api_env)
        batch_id = first.json()["batch_id"]
        _events(c, batch_id)
        rows = [json.loads(x) for x in c.get(f"/v1/batches/{batch_id}/results").text.splitlines()]
        assert [(r["index"], r.get("repeats"), r["cursor"]) for r in rows] == [
            (0, [2], 1),
            (3, None, 2),
        ]
        assert rows[0]["result"]["domain"] == "one.com" and rows[1]["result"]["domain"] == "two.com"
        rest = c.get(f"/v1/batches/{batch_id}/results", params={"cursor": rows[0]["cursor"]})
        assert [json.loads(x)["index"] for x in rest.text.splitlines()] == [3]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"pipeline": "company", "items": [{"domain": NaN}]}',
        b'{"pipeline": "company", "items": [{"domain": "x.com"}], "urgent": Infinity}',
        b'{"pipeline": "company", "items": [{"domain": "\\ud800"}]}',
    ],
)
def test_values_strict_json_cannot_carry_are_named_not_a_500(api: str, raw: bytes) -> None:
    with _client(api) as c:
        r = c.post("/v1/batches", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert json.loads(r.text)["error"]  # strict JSON, one message


def test_a_stored_batch_whose_submitter_died_starts_when_the_request_is_sent_again(
    api_env: dict[str, str],
    workers: WorkerPool,
    redis_client: redis_lib.Redis,
    tmp_path: Path,
) -> None:
    # The first request stored the batch, then its runners and the watchdog's index were lost
    # (a submitter gone between the steps). The client sends it again: the batch starts.
    env = {**api_env, "PROJ_BATCH_RUNNER_LEASE_S": "2", "PROJ_BATCH_WATCHDOG_INTERVAL_S": "0.5"}
    request = {"pipeline": "company", "items": _domains(3, "stranded")}
    with _serve(env, tmp_path / "api.log") as url, _client(url) as c:
        first = c.post("/v1/batches", json=request, headers={"Idempotency-Key": "s1"})
        assert first.status_code == 202, first.text
        batch_id = first.json()["batch_id"]
        redis_client.zrem(proj_keys.BATCH_LEASES, batch_id)
        for name in proj_keys.queue_lists("bulk"):
            redis_client.delete(name)  # the runners' messages, never sent
        again = c.post("/v1/batches", json=request, headers={"Idempotency-Key": "s1"})
        assert again.json()["batch_id"] == batch_id
        assert redis_client.zscore(proj_keys.BATCH_LEASES, batch_id) is not None
        workers.start("bulk", ("bulk",), concurrency=2, env=env)
        assert _events(c, batch_id)[-1][1]["done"] == 3


def test_behind_a_proxy_the_urls_start_at_the_public_address(
    api_env: dict[str, str], redis_client: redis_lib.Redis, tmp_path: Path
) -> None:
    env = {**api_env, "PROJ_API_PUBLIC_URL": "https://proj.example.com/"}
    with _serve(env, tmp_path / "api.log") as url, _client(url) as c:
        r = c.post(
            "/v1/batches",
            json={"pipeline": "company", "items": _domains(1)},
            headers={"Host": "attacker.example"},
        )
        assert r.status_code == 202, r.text
        batch_id = r.json()["batch_id"]
        assert r.json()["status_url"] == f"https://proj.example.com/v1/batches/{batch_id}"
        assert r.headers["location"] == r.json()["status_url"]
        assert r.json()["results_url"].startswith("https://proj.example.com/v1/batches/")


def test_a_runner_that_died_in_the_last_step_is_replaced_and_the_callback_still_comes(
    api_env: dict[str, str],
    workers: WorkerPool,
    redis_client: redis_lib.Redis,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    env = {**api_env, "PROJ_BATCH_RUNNER_LEASE_S": "2", "PROJ_BATCH_WATCHDOG_INTERVAL_S": "0.5"}
    workers.start("bulk", ("bulk",), concurrency=2, env=env)
    request = {"pipeline": "company", "items": _domains(2, "last"), "callback_url": receiver.url}
    with _serve(env, tmp_path / "api.log") as url, _client(url) as c:
        r = c.post("/v1/batches", json=request)
        assert r.status_code == 202, r.text
        batch_id = r.json()["batch_id"]
        _events(c, batch_id)
        wait_until(lambda: len(receiver.calls) == 1, 30, "the first callback")
        # As if the runner that finished the batch had died in its last step: not finalized,
        # no callback sent, its lease gone, the index pointing at it.
        redis_client.hdel(proj_keys.batch(batch_id), "finalized", "summary", "callback")
        redis_client.delete(proj_keys.batch(batch_id, "runners"))
        redis_client.zadd(proj_keys.BATCH_LEASES, {batch_id: 1})
        wait_until(lambda: len(receiver.calls) == 2, 30, "the callback, from the runner sent again")
        state = c.get(f"/v1/batches/{batch_id}").json()
        assert state["finalized"] is not None and state["done"] == 2
        wait_until(
            lambda: redis_client.zscore(proj_keys.BATCH_LEASES, batch_id) is None,
            10,
            "the batch out of the watchdog's index",
        )
