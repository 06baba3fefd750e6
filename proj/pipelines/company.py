"""Company lookups in bulk: one lookup per item, ``{"domain": "acme.com"}``.

The single-call task is :func:`proj.tasks.calls.company`; both call
:func:`proj.provider.lookups.company`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proj.pipelines.definition import Pipeline
from proj.provider import lookups

if TYPE_CHECKING:
    from proj.provider.runtime import Providers

DOMAIN = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


class Domain(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    domain: str = Field(max_length=253)
    key: str | None = None
    category: str | None = Field(None, min_length=1, max_length=64)
    priority: int | None = Field(None, ge=0, le=9)  # in a batch, higher starts first

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if not DOMAIN.match(v):
            raise ValueError("is not a domain name")
        return v.lower()


class CompanyPipeline(Pipeline):
    name = "company"
    model = Domain
    noun = "company"
    label_field = "domain"

    async def process(self, p: Providers, item: dict[str, Any], *, run_id: str) -> dict[str, Any]:
        return await lookups.company(p, item["domain"])


PIPELINE = CompanyPipeline()
