"""The lookup API's two calls, in one place: every pipeline and task uses these.

Values go into the path percent-encoded, so a domain or an email can never name another
path of the provider (the guarded transport also refuses any path that leaves its base).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from proj.provider.runtime import Providers


async def company(p: Providers, domain: str) -> dict[str, Any]:
    """Company profile by domain."""
    return dict(await p.company.get_json(f"/v1/companies/{quote(domain, safe='')}"))


async def person(p: Providers, email: str) -> dict[str, Any]:
    """Person profile by email."""
    return dict(await p.person.get_json(f"/v1/people/{quote(email, safe='@')}"))
