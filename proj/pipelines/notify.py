"""The last step of a pipeline: tell someone. A webhook POST when configured, a log line
otherwise. The webhook URL comes from settings (it often embeds a token), never from task
arguments."""

from __future__ import annotations

import logging
from typing import Any

from proj.app import app
from proj.provider import runtime
from proj.provider.errors import ProviderError
from proj.settings import get_settings

logger = logging.getLogger("proj.notify")


def headline(summary: dict[str, Any]) -> str:
    """One line about a finished run."""
    failed = summary.get("failed_items") or []
    top = ", ".join(f"{p['email']} ({p['score']})" for p in summary.get("top_prospects", [])[:3])
    return (
        f"{summary.get('pipeline', 'pipeline')} run {summary.get('run_id')}: "
        f"{summary.get('stored', 0)}/{summary.get('items', 0)} stored, "
        f"{summary.get('failed_branches', 0)} failed branches"
        + (f", {len(failed)} failed items" if failed else "")
        + (f"; top prospects: {top}" if top else "")
    )


@app.task(name="proj.notify")
def notify(summary: dict[str, Any]) -> dict[str, Any]:
    """POST ``summary`` to PROJ_NOTIFY_WEBHOOK_URL, or log its headline."""
    settings = get_settings()
    webhook = settings.results.notify_webhook_url
    line = headline(summary)
    if webhook is None:
        logger.info("%s", line)
        return {"notified": "log", "line": line}
    url = webhook.get_secret_value()

    async def post(p: runtime.Providers) -> Any:
        return await p.get("webhook").post_json(url, {"text": line, "summary": summary})

    try:
        runtime.run(post, timeout_s=settings.providers.http_timeout_s + 5)
    except ProviderError as err:
        # The URL may carry a token: report the error kind only.
        logger.warning("webhook notification failed (%s); %s", err.kind, line)
        return {"notified": "failed", "kind": err.kind, "line": line}
    return {"notified": "webhook", "line": line}
