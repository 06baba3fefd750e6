"""Hostile input through ``proj submit``: every bad line is refused in one line that names its
number (and the field), long values are cut, nothing prints a traceback, and the good lines
among them are still accepted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis as redis_lib

PROJ = str(Path(sys.executable).parent / "proj")

GOOD = {"email": "ann@acme.com", "message": "pricing?"}

# (what it is, the raw line)
HOSTILE: list[tuple[str, bytes]] = [
    ("not UTF-8", b'{"email": "a\xff@acme.com"}'),
    ("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000),
    ("an integer of 5,000 digits", b'{"email": "b@acme.com", "n": ' + b"9" * 5000 + b"}"),
    ("a line over 1 MB", b'{"email": "' + b"c" * 1_100_000 + b'@acme.com"}'),
    ("a 10 MB message", json.dumps({**GOOD, "message": "m" * 10_000_000}).encode()),
    ("not JSON", b"{not json"),
    ("JSON null", b"null"),
    ("a list", b"[1, 2]"),
    ("NUL in the email", json.dumps({"email": "d\u0000@acme.com"}).encode()),
    ("a control character", json.dumps({**GOOD, "message": "hi\u0007there"}).encode()),
    ("a bidi override", json.dumps({**GOOD, "message": "abc\u202edef"}).encode()),
    ("a path in the email", json.dumps({"email": "e@../../admin/config"}).encode()),
    ("a query in the email", json.dumps({"email": "f@acme.com?x=1"}).encode()),
    ("email of the wrong type", json.dumps({"email": 12}).encode()),
    ("no email", json.dumps({"message": "hi"}).encode()),
]


@pytest.mark.timeout(120)
def test_hostile_lines_are_refused_by_number_and_the_good_ones_run(
    redis_client: redis_lib.Redis, tmp_path: Path, chaos_report: Callable[..., None]
) -> None:
    lines = [json.dumps(GOOD).encode()]
    lines += [raw for _, raw in HOSTILE]
    lines.append(json.dumps({**GOOD, "email": "zed@acme.com"}).encode())
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    out = subprocess.run(
        [PROJ, "submit", str(path), "--pipeline", "leads", "--no-wait"],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        timeout=90,
        check=False,
    )
    text = (out.stdout + out.stderr).decode("utf-8", "replace")
    refused = {int(m) for m in re.findall(r"^rejected line (\d+): ", text, re.M)}
    tracebacks = text.count("Traceback")
    chaos_report(
        bad_inputs=len(HOSTILE),
        refused_in_one_line=len(refused),
        tracebacks=tracebacks,
        good_accepted=2 if ": 2 items" in text else text[-200:],
        output_bytes=len(text),
    )
    assert tracebacks == 0, text[-3000:]
    assert out.returncode == 0, text[-3000:]  # the two good lines were submitted
    assert refused == set(range(2, 2 + len(HOSTILE))), (sorted(refused), text[-3000:])
    assert len(text) < 20_000  # no value echoed back whole
    for line in text.splitlines():
        assert len(line) < 400, line[:400]
