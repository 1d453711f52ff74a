"""Who is calling, and what they may see."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from app.errors import Forbidden


class Role(StrEnum):
    OPERATOR = "operator"
    CUSTOMER = "customer"


@dataclass(frozen=True)
class Principal:
    """An API key, or a tenant's ticketing integration acting through a signed webhook (then
    ``key_id`` is None and ``integration_id`` says which: a customer of its tenant, no more)."""

    key_id: uuid.UUID | None
    role: Role
    tenant_id: uuid.UUID | None
    integration_id: uuid.UUID | None = None

    @classmethod
    def of_integration(cls, integration_id: uuid.UUID, tenant_id: uuid.UUID) -> Principal:
        return cls(key_id=None, role=Role.CUSTOMER, tenant_id=tenant_id, integration_id=integration_id)

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    @property
    def tenant_scope(self) -> uuid.UUID | None:
        """The only tenant this caller may see, or None for all (operators).

        Repositories filter by it, so that an object of another tenant is simply not found
        (404) rather than forbidden (403), which would reveal that it exists.
        """
        return None if self.is_operator else self.tenant_id

    def require_operator(self, action: str) -> None:
        if not self.is_operator:
            raise Forbidden(f"Only operators may {action}; this key has the customer role.")
