"""The URLs ``proj api`` hands out (status, results, events): under PROJ_API_PUBLIC_URL when it
is set (the address clients reach through a proxy), else from the request as it arrived."""

from __future__ import annotations

from typing import Any

from fastapi import Request


def link(request: Request, route: str, **params: Any) -> str:
    public: str | None = request.app.state.settings.api.public_url
    if public:
        return public.rstrip("/") + str(request.app.url_path_for(route, **params))
    return str(request.url_for(route, **params))
