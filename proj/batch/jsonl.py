"""Reading a JSON-lines file of items (``proj submit``) without trusting it: a bad line is a
message naming its number and what is wrong, never an exception, and a huge line is refused
without being read into memory whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: A line longer than this is refused (and not read into memory whole).
MAX_LINE_BYTES = 1024 * 1024


def read_jsonl(path: Path) -> tuple[list[tuple[int, Any]], list[str]]:
    """(line number, item) from a JSON-lines file, and a message per line that cannot be an
    item: not UTF-8, not JSON, nested too deeply, a number out of range, or longer than
    ``MAX_LINE_BYTES``. Blank lines are skipped."""
    items: list[tuple[int, Any]] = []
    bad: list[str] = []
    with path.open("rb") as fh:
        n = 0
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            n += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the long line
                    raw = fh.readline(MAX_LINE_BYTES)
                bad.append(f"line {n}: longer than {MAX_LINE_BYTES // 1024} KiB")
                continue
            problem, item = _parse_line(raw)
            if problem:
                bad.append(f"line {n}: {problem}")
            elif item is not _BLANK:
                items.append((n, item))
    return items, bad


_BLANK = object()


def _parse_line(raw: bytes) -> tuple[str | None, Any]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})", None
    if not line.strip():
        return None, _BLANK
    try:
        return None, json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at column {exc.colno})", None
    except RecursionError:
        return "nested too deeply", None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        return f"a value out of range ({str(exc)[:80]})", None
