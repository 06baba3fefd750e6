"""Settings of the HTTP front door (``proj api``): where it listens, who gets in, its limits,
and where its callbacks may go."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from proj.settings.fields import _config
from proj.webhooks import AllowList

#: Where ``proj api`` looks for its keys when PROJ_API_KEYS_FILE is unset.
DEFAULT_KEYS_FILE = Path("config/api_keys.toml")


class ApiSettings(BaseSettings):
    """``proj api``: address, API keys, request limits, completion callbacks."""

    model_config = _config("PROJ_API_")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8800, ge=0, le=65535, description="Port; 0 picks a free one.")
    public_url: str | None = Field(
        None,
        description="How clients reach the API (https://proj.example.com behind a proxy): the "
        "base of the URLs it answers with; unset, the request's own.",
    )
    keys_file: Path | None = Field(
        None,
        description="TOML file of API keys (hashes, scopes, rate limits); default "
        "config/api_keys.toml. Make a key with `proj api key NAME`.",
    )
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="A larger request body is answered 413."
    )
    max_items: int = Field(10_000, ge=1, description="Items one batch request may carry.")
    callback_allow: str = Field(
        "",
        description="Hosts, *.domains, addresses or networks callbacks may go to, "
        "comma-separated; loopback, link-local and private addresses only when listed.",
    )
    callback_secret: SecretStr | None = Field(
        None, description="Key of the callbacks' HMAC-SHA256 signature (Proj-Signature)."
    )
    callback_timeout_s: float = Field(10.0, gt=0, description="One callback attempt's timeout.")
    callback_retries: int = Field(
        8, ge=0, le=50, description="Retries of a failed callback (backoff doubling to 10 min)."
    )
    task_ttl_s: int = Field(
        86400, gt=0, description="How long GET /v1/tasks/{id} knows a task submitted through it."
    )

    @field_validator("callback_allow")
    @classmethod
    def _allow(cls, v: str) -> str:
        AllowList.parse(v)  # a bad entry is named at start-up
        return v

    @property
    def allow_list(self) -> AllowList:
        return AllowList.parse(self.callback_allow)

    @property
    def keys_path(self) -> Path:
        return self.keys_file or DEFAULT_KEYS_FILE
