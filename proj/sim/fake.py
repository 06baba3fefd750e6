"""Deterministic fake data: the same input gives the same answer in every run."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_INDUSTRIES = (
    "software",
    "fintech",
    "healthcare",
    "retail",
    "logistics",
    "manufacturing",
    "media",
    "education",
    "energy",
    "real estate",
)
_COUNTRIES = ("US", "GB", "DE", "FR", "NL", "SE", "CA", "AU", "JP", "BR")
_TITLES = (
    ("Analyst", "junior"),
    ("Engineer", "mid"),
    ("Product Manager", "mid"),
    ("Head of Sales", "senior"),
    ("Director of Operations", "senior"),
    ("VP Engineering", "executive"),
    ("CTO", "executive"),
    ("CEO", "executive"),
)
_SENTIMENTS = ("negative", "neutral", "positive")
_URGENT_WORDS = ("urgent", "asap", "immediately", "outage", "down", "deadline", "today")
#: Terms that make a document risky (a compliance review then runs on it).
_RISK_WORDS = (
    "breach",
    "penalty",
    "liability",
    "lawsuit",
    "fraud",
    "indemnif",
    "non-compliance",
    "terminate",
)


def _h(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "big")


def company(domain: str) -> dict[str, Any]:
    h = _h("company", domain)
    stem = domain.split(".")[0]
    employees = int(5 * 10 ** ((h % 1000) / 1000 * 4))  # 5 .. 50,000, log-uniform
    return {
        "domain": domain,
        "name": " ".join(w.capitalize() for w in re.split(r"[-_]", stem)),
        "industry": _INDUSTRIES[h % len(_INDUSTRIES)],
        "employees": employees,
        "revenue_usd": employees * (80_000 + (h >> 12) % 220_000),
        "country": _COUNTRIES[(h >> 20) % len(_COUNTRIES)],
        "founded": 1950 + (h >> 28) % 74,
    }


def person(email: str) -> dict[str, Any]:
    h = _h("person", email)
    local = email.split("@")[0]
    title, seniority = _TITLES[h % len(_TITLES)]
    return {
        "email": email,
        "name": " ".join(w.capitalize() for w in re.split(r"[._-]", local) if w),
        "title": title,
        "seniority": seniority,
        "tenure_years": (h >> 8) % 15,
    }


def source(name: str) -> dict[str, Any]:
    h = _h("source", name)
    return {
        "source": name,
        "metric": round((h % 100_000) / 100.0, 2),
        "items": [{"id": f"{name}-{i}", "score": (h >> (i * 4)) % 100} for i in range(5)],
    }


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message: its content string, or the text parts of a content list."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return str(content)


def chat_content(messages: list[dict[str, Any]]) -> str:
    """A JSON object answering every analysis proj asks for, derived from the prompt."""
    text = " ".join(message_text(m) for m in messages if m.get("role") == "user")
    h = _h("chat", text)
    words = text.split()
    entities = []
    for w in words:
        w = w.strip(".,;:!?()\"'")
        if w[:1].isupper() and len(w) > 2 and w not in entities:
            entities.append(w)
    lowered = text.lower()
    urgent = any(word in lowered for word in _URGENT_WORDS)
    flags = [w for w in _RISK_WORDS if w in lowered]
    sentiment = _SENTIMENTS[h % 3]
    return json.dumps(
        {
            "summary": " ".join(words[:24]),
            "sentiment": sentiment,
            "sentiment_score": round(
                {"negative": -1, "neutral": 0, "positive": 1}[sentiment]
                * (0.3 + (h >> 4) % 70 / 100),
                2,
            ),
            "entities": entities[:10],
            "intent": ("low", "medium", "high")[(h >> 8) % 3],
            "urgency": "high" if urgent else ("normal", "low")[(h >> 10) % 2],
            "budget_signal": ("low", "medium", "high")[(h >> 12) % 3],
            "fit_score": 1 + (h >> 16) % 10,
            "complexity": "complex" if len(text) >= 1200 else "simple",
            "risk": "high" if flags else "none",
            "risk_flags": flags,
            "verdict": "escalate" if flags else "clear",
        }
    )


def stream_pieces(text: str) -> list[str]:
    """``text`` cut into word-sized pieces for a streamed answer; they join back to ``text``."""
    return re.findall(r"\S+\s*|\s+", text)


# (id, created): the models ``GET /v1/models`` lists; chat accepts any model name.
MODELS: tuple[tuple[str, int], ...] = (
    ("gpt-4o-mini", 1721172741),
    ("gpt-4o", 1715367049),
    ("gpt-4.1-mini", 1744318173),
    ("gpt-4.1", 1744316542),
)
MODEL_OWNER = "proj-sim"


def model(model_id: str) -> dict[str, Any] | None:
    """One model in OpenAI's format, or None when the simulator does not list it."""
    for mid, created in MODELS:
        if mid == model_id:
            return {"id": mid, "object": "model", "created": created, "owned_by": MODEL_OWNER}
    return None


def models() -> dict[str, Any]:
    """The model list in OpenAI's format."""
    return {"object": "list", "data": [model(mid) for mid, _ in MODELS]}


def tokens(text: str) -> int:
    """A rough token count (about 4 characters a token), at least 1."""
    return max(1, len(text) // 4)
