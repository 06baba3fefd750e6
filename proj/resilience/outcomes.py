"""Call outcomes per worker node, as the adaptive controller reads them. Pure.

Pool processes count outcomes into ``proj:cc:{node}:win`` (:mod:`proj.guard.outcomes`):
``o:<bucket>`` successes, ``f:<bucket>`` failures and ``l:<bucket>`` overloads (429s, counted
in ``f`` too), in buckets of ``BUCKET_MS``.
"""

from __future__ import annotations

from collections.abc import Mapping

BUCKET_MS = 200
TTL_S = 120


def window_counts(raw: Mapping[bytes | str, bytes | str], since_ms: float) -> tuple[int, int, int]:
    """(ok, failed, overloaded) in the buckets that start after ``since_ms``."""
    ok = failed = overloaded = 0
    first = int(since_ms) // BUCKET_MS + 1  # whole buckets after ``since_ms``
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else field
        kind, _, bucket = name.partition(":")
        if int(bucket) >= first:
            if kind == "o":
                ok += int(value)
            elif kind == "f":
                failed += int(value)
            elif kind == "l":
                overloaded += int(value)
    return ok, failed, overloaded
