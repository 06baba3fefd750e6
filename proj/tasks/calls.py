"""One task per call to a dependency: for apps that enqueue single lookups or completions.

Each goes through the dependency's circuit breaker; transient failures are retried with
backoff, an open breaker or a 429 defers the task (see :class:`proj.tasks.base.ProjTask`).
"""

from __future__ import annotations

from typing import Any

from proj.app import app
from proj.provider import lookups, runtime
from proj.settings import get_settings


def _limit() -> float:
    return get_settings().providers.http_timeout_s + 5


@app.task(name="proj.calls.company")
def company(domain: str) -> dict[str, Any]:
    """Company profile by domain (the lookup API)."""
    return runtime.run(lambda p: lookups.company(p, domain), _limit())


@app.task(name="proj.calls.person")
def person(email: str) -> dict[str, Any]:
    """Person profile by email (the lookup API)."""
    return runtime.run(lambda p: lookups.person(p, email), _limit())


@app.task(name="proj.calls.chat")
def chat(messages: list[dict[str, str]], model: str | None = None) -> dict[str, Any]:
    """One chat completion; returns the content, model, tokens and cost."""
    chosen = model or get_settings().queues.model_small

    async def call(p: runtime.Providers) -> dict[str, Any]:
        result = await p.ai.chat(model=chosen, messages=messages, json_mode=False)
        return {"content": result.content, "usage": result.usage.to_dict()}

    return runtime.run(call, _limit())
