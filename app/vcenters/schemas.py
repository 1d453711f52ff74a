from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from app.schemas import InputModel, OutputModel


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://vcenter.example.com")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials; send username and password as their own fields")
    if parts.query or parts.fragment:
        raise ValueError("must not contain a query or fragment")
    return value.rstrip("/")


class VCenterCreate(InputModel):
    tenant_id: uuid.UUID
    name: str = Field(min_length=1, max_length=200)
    url: str = Field(max_length=500, description="https://vcenter.example.com (path /sdk implied)")
    username: str = Field(min_length=1, max_length=200)
    password: SecretStr = Field(min_length=1, max_length=500)
    verify_tls: bool = Field(
        default=True, description="Verify the certificate; turn off only for lab setups."
    )

    _url = field_validator("url")(_check_url)


class VCenterUpdate(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    url: str | None = Field(default=None, max_length=500)
    username: str | None = Field(default=None, min_length=1, max_length=200)
    password: SecretStr | None = Field(default=None, min_length=1, max_length=500)
    verify_tls: bool | None = None

    @field_validator("url")
    @classmethod
    def _url_ok(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    @model_validator(mode="after")
    def _credentials_together(self) -> VCenterUpdate:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password are changed together")
        return self


class VCenterRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    url: str
    verify_tls: bool
    connection_status: str = Field(description="unknown, connected or error")
    last_error_kind: str | None
    last_error: str | None
    last_checked_at: datetime | None
    last_sync_at: datetime | None
    last_sync_status: str | None
    product: str | None
    api_version: str | None
    instance_uuid: str | None
    credentials_updated_at: datetime
    created_at: datetime
    updated_at: datetime


class ConnectionProblem(OutputModel):
    kind: str
    message: str


class VCenterTestResult(OutputModel):
    ok: bool
    checked_at: datetime
    product: str | None = None
    api_version: str | None = None
    error: ConnectionProblem | None = None
