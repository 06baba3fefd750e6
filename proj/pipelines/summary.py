"""Summaries of a pipeline run: time, errors and cost per category, top prospects. Pure."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from proj.stats import percentile


def summarize(
    pipeline: str,
    run_id: str,
    records: list[dict[str, Any]],
    *,
    started_at: float,
    now: float,
    top: int = 5,
) -> dict[str, Any]:
    """Summary of per-item records (each with errors, seconds, usage, category, score; an
    item that failed for good has ``failed``: its kind and message, and is listed apart)."""
    failed: list[dict[str, Any]] = []
    missing: dict[str, list[dict[str, Any]]] = defaultdict(list)
    kinds: Counter[str] = Counter()
    by_cat: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"items": 0, "seconds": 0.0, "errors": 0, "cost_usd": 0.0, "tokens": 0}
    )
    sequential = 0.0
    queues: Counter[str] = Counter(str(r.get("queue")) for r in records if r.get("queue"))
    models: Counter[str] = Counter(str(r.get("model")) for r in records if r.get("model"))
    waits: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.get("failed"):
            why = r["failed"]
            item = r.get("email") or r.get("key")
            failed.append({"item": item, "kind": why.get("kind"), "reason": why.get("message")})
            continue
        if r.get("queue") and r.get("queue_wait_s") is not None:
            waits[str(r["queue"])].append(float(r["queue_wait_s"]))
        cat = by_cat[r.get("category") or pipeline]
        cat["items"] += 1
        seconds = sum((r.get("seconds") or {}).values())
        cat["seconds"] += seconds
        sequential += seconds
        for branch, err in (r.get("errors") or {}).items():
            kinds[err.get("kind", "internal")] += 1
            cat["errors"] += 1
            missing[branch].append(
                {
                    "item": r.get("email") or r.get("key"),
                    "kind": err.get("kind"),
                    "reason": err.get("message"),
                }
            )
        for u in r.get("usage") or []:
            cat["cost_usd"] += u.get("cost_usd") or 0.0
            cat["tokens"] += int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0))
    ranked = sorted(
        (r for r in records if "score" in r),
        key=lambda r: (-r["score"], -(r.get("budget") or 0), r.get("email", "")),
    )
    wall = max(0.0, now - started_at)
    return {
        "pipeline": pipeline,
        "run_id": run_id,
        "items": len(records),
        "stored": sum(1 for r in records if r.get("stored")),
        "top_prospects": [
            {
                "email": r.get("email"),
                "name": r.get("name"),
                "score": r["score"],
                "budget": r.get("budget"),
                "urgency": r.get("urgency"),
            }
            for r in ranked[:top]
        ],
        "missing": dict(missing),
        "missing_company": missing.get("company", []),
        "failed_items": failed,
        "failed_branches": sum(kinds.values()),
        "errors_by_kind": dict(kinds),
        "by_category": {k: {**v, "cost_usd": round(v["cost_usd"], 6)} for k, v in by_cat.items()},
        "cost_usd": round(sum(c["cost_usd"] for c in by_cat.values()), 6),
        "by_queue": dict(queues),
        "by_model": dict(models),
        "queue_wait": {
            q: {"n": len(w), "p50_s": percentile(w, 50), "p99_s": percentile(w, 99)}
            for q, w in waits.items()
        },
        "wall_s": wall,
        "sequential_call_s": sequential,
    }
