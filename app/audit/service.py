"""Recording requests in the audit log and reading it back, scoped to the caller's tenant."""

from __future__ import annotations

import itertools
import secrets
import time
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.repository import AuditRepository
from app.audit.schemas import AuditEntry, AuditEventRead, AuditFilter, Outcome, outcome_of
from app.auth import tokens
from app.auth.principal import Principal
from app.auth.repository import ApiKeyRepository
from app.pagination import PageRequest
from app.proxies.repository import ProxyRepository

_AGENT_PREFIXES = frozenset({tokens.PROXY_TOKEN_PREFIX, tokens.GUEST_TOKEN_PREFIX})
_sequence = itertools.count()


def time_ordered_id() -> uuid.UUID:
    """A UUIDv7 (milliseconds since the epoch, then a per-process counter and random bits).

    Pages are ordered by ``(at, id)``: events recorded in the same instant then keep the order
    in which they were written, at least within one replica."""
    millis = time.time_ns() // 1_000_000
    counter = next(_sequence) & 0xFFF
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64
    value |= 0b10 << 62 | secrets.randbits(62)
    return uuid.UUID(int=value)


def _row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": time_ordered_id(),
        "at": entry.at,
        "request_id": entry.request_id,
        "actor": entry.actor.value,
        "key_id": entry.key_id,
        "key_lookup_id": entry.key_lookup_id,
        "tenant_id": entry.tenant_id,
        "action": entry.action[:200],
        "object_type": entry.object_type[:60] if entry.object_type else None,
        "object_id": entry.object_id[:100] if entry.object_id else None,
        "outcome": outcome_of(entry.status).value,
        "status": entry.status,
        "source_address": entry.source_address[:100] if entry.source_address else None,
        "detail": entry.detail,
    }


class AuditService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = AuditRepository(session)

    async def record_many(self, entries: list[AuditEntry]) -> None:
        """Append events, in their order, with one INSERT. A credential that failed is traced to
        the key (or agent) its public lookup part names, so that "someone tried key X with a wrong
        secret" is visible, and to that key's tenant, whose customers then see the attempt too."""
        rows = []
        for entry in entries:
            if entry.key_id is None and entry.key_lookup_id is not None:
                entry.key_id, entry.tenant_id = await self._owner_of(
                    entry.credential_prefix, entry.key_lookup_id
                )
            rows.append(_row(entry))
        await self.repo.add_many(rows)

    async def _owner_of(
        self, prefix: str | None, lookup_id: str
    ) -> tuple[uuid.UUID | None, uuid.UUID | None]:
        if prefix == tokens.API_KEY_PREFIX:
            key = await ApiKeyRepository(self.session).get_by_lookup_id(lookup_id)
            return (key.id, key.tenant_id) if key else (None, None)
        if prefix in _AGENT_PREFIXES:
            agent = await ProxyRepository(self.session).get_by_token_lookup(lookup_id)
            return (agent.id, agent.tenant_id) if agent else (None, None)
        return None, None

    async def list_page(
        self, principal: Principal, f: AuditFilter, page: PageRequest
    ) -> tuple[list[AuditEventRead], int]:
        """Operators see every event; customers their tenant's, where a refused request keeps
        its object and reason to itself: the id a caller sent may be another tenant's object
        (a 404 is how isolation hides it), and the log must not become a way to collect them."""
        events, total = await self.repo.list_page(principal.tenant_scope, f, page)
        reads = [AuditEventRead.model_validate(e) for e in events]
        if not principal.is_operator:
            for read in reads:
                if read.outcome != Outcome.SUCCESS.value:
                    read.object_id = None
                    read.detail = {}
        return reads, total
