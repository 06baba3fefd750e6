"""Combine a lead's branches into one profile. Pure: works with whatever branches succeeded."""

from __future__ import annotations

from typing import Any

_SIZE_BUCKETS = (
    (10, "1-10"),
    (50, "11-50"),
    (200, "51-200"),
    (1000, "201-1000"),
    (5000, "1001-5000"),
)
_SIZE_SCORE = {"1-10": 3, "11-50": 5, "51-200": 7, "201-1000": 9, "1001-5000": 10, "5000+": 8}
_SENIORITY_SCORE = {"junior": 3, "mid": 5, "senior": 8, "executive": 10}
_SIGNAL_FACTOR = {"low": 0.5, "medium": 1.0, "high": 2.0}
_SIGNAL_BASE_USD = {"low": 5_000, "medium": 20_000, "high": 60_000}


def company_size(employees: Any) -> str | None:
    if not isinstance(employees, int) or employees < 1:
        return None
    for limit, label in _SIZE_BUCKETS:
        if employees <= limit:
            return label
    return "5000+"


def budget_estimate(company: dict[str, Any] | None, ai: dict[str, Any] | None) -> int | None:
    """US dollars: 0.05% of revenue (2k..500k), scaled by the AI's budget signal."""
    signal = (ai or {}).get("budget_signal")
    revenue = (company or {}).get("revenue_usd")
    if isinstance(revenue, (int, float)) and revenue > 0:
        base = min(500_000.0, max(2_000.0, revenue * 0.0005))
        return int(round(base * _SIGNAL_FACTOR.get(signal or "medium", 1.0), -2))
    if signal in _SIGNAL_BASE_USD:
        return _SIGNAL_BASE_USD[signal]
    return None


def qualification_score(
    ai: dict[str, Any] | None, size: str | None, person: dict[str, Any] | None
) -> int:
    """1..10: the AI's fit (half), company size and seniority (a quarter each), re-weighted
    over the parts that are known; 1 when nothing is."""
    parts: list[tuple[float, float]] = []
    fit = (ai or {}).get("fit_score")
    if isinstance(fit, (int, float)):
        parts.append((min(10.0, max(1.0, float(fit))), 0.5))
    if size in _SIZE_SCORE:
        parts.append((_SIZE_SCORE[size], 0.25))
    seniority = (person or {}).get("seniority")
    if seniority in _SENIORITY_SCORE:
        parts.append((_SENIORITY_SCORE[seniority], 0.25))
    if not parts:
        return 1
    score = sum(v * w for v, w in parts) / sum(w for _, w in parts)
    return int(min(10, max(1, round(score))))


def combine(lead: dict[str, Any], fan: dict[str, Any], *, model: str) -> dict[str, Any]:
    """One profile from the fan-in of ``ai``, ``company`` and ``person``."""
    results, errors = fan["results"], fan["errors"]
    ai, company, person = results.get("ai"), results.get("company"), results.get("person")
    size = company_size((company or {}).get("employees"))
    urgency = (ai or {}).get("urgency") or ("high" if lead.get("urgent") else "normal")
    costs = [u["cost_usd"] for u in fan.get("usage", []) if u.get("cost_usd") is not None]
    return {
        "lead_key": lead["key"],
        "email": lead["email"],
        "name": lead.get("name") or (person or {}).get("name"),
        "company_domain": lead.get("company_domain"),
        "company_name": (company or {}).get("name"),
        "industry": (company or {}).get("industry"),
        "company_size": size,
        "title": (person or {}).get("title"),
        "seniority": (person or {}).get("seniority"),
        "budget_estimate_usd": budget_estimate(company, ai),
        "urgency": urgency,
        "intent": (ai or {}).get("intent"),
        "summary": (ai or {}).get("summary"),
        "qualification_score": qualification_score(ai, size, person),
        "model": model,
        "cost_usd": sum(costs) if costs else None,
        "missing": {name: f"{e.get('kind')}: {e.get('message')}" for name, e in errors.items()},
    }
