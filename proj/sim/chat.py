"""OpenAI's chat-completions protocol as the simulator speaks it: the request checked as
OpenAI checks it (400s naming the field), the answer, and the server-sent event stream."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from proj.sim import fake


class BadRequest(Exception):
    """A request the provider refuses as invalid (400), before any simulated behaviour."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def response(self) -> web.Response:
        body = {
            "error": {
                "message": self.message,
                "type": "invalid_request_error",
                "param": self.param,
                "code": None,
            }
        }
        return web.json_response(body, status=400)


async def json_body(request: web.Request) -> Any:
    """The body parsed as JSON, or None when there is none (the GET routes)."""
    if not request.can_read_body:
        return None
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise BadRequest(f"the request body is not valid JSON: {err}", "body") from None


def chat_key(_: web.Request, body: Any) -> str:
    return json.dumps(body.get("messages", []) if isinstance(body, dict) else [], sort_keys=True)


_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


async def chat_body(request: web.Request) -> dict[str, Any]:
    """The chat request, checked as OpenAI checks it; :class:`BadRequest` names the field."""
    body = await json_body(request)
    if body is None:
        raise BadRequest("the request body is missing: expected a JSON object", "body")
    if not isinstance(body, dict):
        kind = type(body).__name__
        raise BadRequest(f"the request body must be a JSON object, not {kind}", "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter ('model')", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        what = "missing" if messages is None else "empty or not a list"
        raise BadRequest(f"'messages' is {what}: expected a non-empty list", "messages")
    for i, m in enumerate(messages):
        where = f"messages.[{i}]"
        if not isinstance(m, dict):
            raise BadRequest(f"'{where}' must be an object with role and content", where)
        role = m.get("role")
        if role not in _ROLES:
            raise BadRequest(f"'{where}.role' must be one of {', '.join(_ROLES)}", f"{where}.role")
        content = m.get("content")
        if "content" not in m and role != "assistant":
            raise BadRequest(f"missing required parameter '{where}.content'", f"{where}.content")
        if not isinstance(content, str | list) and not (content is None and role == "assistant"):
            raise BadRequest(f"'{where}.content' must be a string or a list", f"{where}.content")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", "stream")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise BadRequest("'stream_options' must be an object", "stream_options")
        if stream is not True:
            raise BadRequest(
                "'stream_options' is only allowed when 'stream' is enabled", "stream_options"
            )
    return body


def chat_answer(_: web.Request, body: Any) -> dict[str, Any]:
    messages = body.get("messages", []) if isinstance(body, dict) else []
    content = fake.chat_content(messages)
    prompt_tokens = sum(fake.tokens(fake.message_text(m)) for m in messages)
    completion_tokens = fake.tokens(content)
    return {
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "sim") if isinstance(body, dict) else "sim",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


_FIRST_CHUNK_SHARE = 0.8  # of the latency, before the first chunk (time to first token)


async def chat_stream(request: web.Request, body: Any, delay: float) -> web.StreamResponse:
    """The chat answer as OpenAI's server-sent events; the deltas join to the plain answer."""
    answer = chat_answer(request, body)
    pieces = fake.stream_pieces(answer["choices"][0]["message"]["content"])
    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage"))
    base = {k: answer[k] for k in ("id", "created", "model")}

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        c: dict[str, Any] = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return c

    first_wait = delay * _FIRST_CHUNK_SHARE
    gap = (delay - first_wait) / max(1, len(pieces))
    if first_wait > 0:
        await asyncio.sleep(first_wait)
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    response.charset = "utf-8"

    async def send(data: dict[str, Any]) -> None:
        await response.write(b"data: " + json.dumps(data).encode() + b"\n\n")

    try:
        await response.prepare(request)
        await send(chunk({"role": "assistant", "content": ""}, None))
        for i, piece in enumerate(pieces):
            if gap > 0:
                await asyncio.sleep(gap)
            await send(chunk({"content": piece}, "stop" if i == len(pieces) - 1 else None))
        if not pieces:
            await send(chunk({}, "stop"))
        if include_usage:
            await send(
                {**base, "object": "chat.completion.chunk", "choices": [], "usage": answer["usage"]}
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionError:
        pass  # the caller hung up mid-stream; the handler's finally drops the gauge
    return response
