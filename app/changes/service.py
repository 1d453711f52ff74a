"""Customers ask for protection changes; operators approve them (applied at once, in the same
transaction, through the policy rules an operator's own change would go through) or reject them.

A request is validated when it is made (the policy and VMs exist in the tenant, the fields are
valid) and again when it is approved: what it changes may have changed meanwhile, and an approval
that no longer applies is refused with the reason and changes nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.changes.models import ChangeRequest
from app.changes.repository import ChangeRequestRepository
from app.changes.schemas import (
    ChangeRequestCreate,
    PolicyUpdateRequest,
    ProtectionRequest,
)
from app.clock import Clock
from app.errors import Conflict, InvalidInput, NotFound
from app.pagination import PageRequest
from app.policies.models import Policy
from app.policies.repository import PolicyRepository
from app.policies.schemas import PolicyCreate, PolicyUpdate, VmSelection
from app.policies.service import PolicyService
from app.tenants.repository import TenantRepository

PENDING, APPROVED, REJECTED, CANCELLED = "pending", "approved", "rejected", "cancelled"


def _named_vms(data: ChangeRequestCreate) -> list[tuple[list[str], list[uuid.UUID]]]:
    """The VM ids a request names, by where they are in its body: each must be one of the
    tenant's VMs when the request is filed, not only when an operator approves it."""
    if isinstance(data, ProtectionRequest):
        return [(["vm_ids"], data.vm_ids)]
    where: list[str]
    fields: object
    if isinstance(data, PolicyUpdateRequest):
        where, fields = ["changes"], data.changes
    else:
        where, fields = ["policy"], data.policy
    named = []
    for part in ("selection", "exclusions"):
        selection = getattr(fields, part, None)
        if selection is not None and selection.vm_ids:
            named.append(([*where, part, "vm_ids"], list(selection.vm_ids)))
    return named


class ChangeRequestService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.session = session
        self.repo = ChangeRequestRepository(session)
        self.policies = PolicyRepository(session)
        self.clock = clock

    async def get(self, principal: Principal, request_id: uuid.UUID) -> ChangeRequest:
        request = await self.repo.get(request_id, principal.tenant_scope)
        if request is None:
            raise NotFound(f"Change request {request_id} does not exist.")
        return request

    async def list_page(
        self, principal: Principal, tenant_id: uuid.UUID | None, state: str | None, page: PageRequest
    ) -> tuple[list[ChangeRequest], int]:
        return await self.repo.list_page(principal.tenant_scope, tenant_id, state, page)

    async def create(
        self, principal: Principal, data: ChangeRequestCreate, tenant_id: uuid.UUID | None = None
    ) -> ChangeRequest:
        """Customers ask for their own tenant; operators may file one for a tenant (``tenant_id``)."""
        tenant = principal.tenant_id if not principal.is_operator else tenant_id
        if tenant is None:
            raise InvalidInput("Say which tenant the request is for.", field=["query", "tenant_id"])
        if principal.is_operator and await TenantRepository(self.session).get(tenant, None) is None:
            raise InvalidInput(f"Tenant {tenant} does not exist.", field=["query", "tenant_id"])
        policy_id: uuid.UUID | None = None
        if isinstance(data, PolicyUpdateRequest | ProtectionRequest):
            policy = await self.policies.get(data.policy_id, tenant)
            if policy is None:
                raise InvalidInput(f"Policy {data.policy_id} does not exist.", field=["body", "policy_id"])
            policy_id = policy.id
        for path, vm_ids in _named_vms(data):
            found = await self.policies.existing_vm_ids(tenant, vm_ids)
            for index, vm_id in enumerate(vm_ids):
                if vm_id not in found:
                    # Another tenant's VM is reported as one that does not exist.
                    raise InvalidInput(f"VM {vm_id} does not exist.", field=["body", *path, index])
        request = ChangeRequest(
            id=uuid.uuid4(),
            tenant_id=tenant,
            kind=data.kind,
            policy_id=policy_id,
            payload=_payload(data),
            comment=data.comment,
            state=PENDING,
            requested_by_key_id=principal.key_id,
            created_at=self.clock.now(),
            result={},
        )
        await self.repo.add(request)
        return request

    async def cancel(self, principal: Principal, request_id: uuid.UUID) -> ChangeRequest:
        request = await self._pending(principal, request_id)
        request.state = CANCELLED
        request.decided_at = self.clock.now()
        request.decided_by_key_id = principal.key_id
        return request

    async def reject(self, principal: Principal, request_id: uuid.UUID, reason: str | None) -> ChangeRequest:
        principal.require_operator("reject change requests")
        if not reason:
            raise InvalidInput(
                "Say why the request is rejected; the customer sees it.", field=["body", "reason"]
            )
        request = await self._pending(principal, request_id)
        request.state = REJECTED
        request.reason = reason
        request.decided_at = self.clock.now()
        request.decided_by_key_id = principal.key_id
        return request

    async def approve(self, principal: Principal, request_id: uuid.UUID, note: str | None) -> ChangeRequest:
        """Apply the change as the approving operator; all or nothing (the request's transaction)."""
        principal.require_operator("approve change requests")
        request = await self._pending(principal, request_id)
        policies = PolicyService(self.session, self.clock)
        try:
            policy = await self._apply(principal, request, policies)
        except (InvalidInput, Conflict, NotFound) as exc:
            raise Conflict(
                f"The change can no longer be applied as asked: {exc.message} Reject it instead."
            ) from exc
        except ValidationError as exc:  # filed by an earlier version that checked less
            first = exc.errors()[0]
            raise Conflict(
                f"The change can no longer be applied as asked: {first['msg']} "
                f"(at {'.'.join(str(p) for p in first['loc'])}). Reject it instead."
            ) from exc
        request.state = APPROVED
        request.reason = note
        request.decided_at = self.clock.now()
        request.decided_by_key_id = principal.key_id
        request.policy_id = policy.id
        request.result = {"policy_id": str(policy.id), "policy_name": policy.name}
        return request

    async def _apply(self, principal: Principal, request: ChangeRequest, policies: PolicyService) -> Policy:
        payload = request.payload
        if request.kind == "policy_create":
            create = PolicyCreate.model_validate({**payload["policy"], "tenant_id": str(request.tenant_id)})
            return await policies.create(principal, create)
        if request.policy_id is None:
            raise NotFound("The policy the request was about was deleted.")
        if request.kind == "policy_update":
            return await policies.update(
                principal, request.policy_id, PolicyUpdate.model_validate(payload["changes"])
            )
        policy = await policies.get(principal, request.policy_id)
        # Read-modify-write of its lists: another approval adding or removing VMs waits for this
        # one and starts from what it wrote (unlocked, one of the two changes was lost).
        locked = await PolicyRepository(self.session).get_for_update(policy.id)
        assert locked is not None
        policy = locked
        selection = VmSelection.model_validate(policy.selection)
        exclusions = VmSelection.model_validate(policy.exclusions)
        vm_ids = [uuid.UUID(v) for v in payload["vm_ids"]]
        if request.kind == "protect":
            selection.vm_ids = list(dict.fromkeys([*selection.vm_ids, *vm_ids]))
            exclusions.vm_ids = [v for v in exclusions.vm_ids if v not in vm_ids]
        else:
            selection.vm_ids = [v for v in selection.vm_ids if v not in vm_ids]
            exclusions.vm_ids = list(dict.fromkeys([*exclusions.vm_ids, *vm_ids]))
        return await policies.update(
            principal, policy.id, PolicyUpdate(selection=selection, exclusions=exclusions)
        )

    async def _pending(self, principal: Principal, request_id: uuid.UUID) -> ChangeRequest:
        request = await self.get(principal, request_id)  # tenant scope: 404 for another tenant's
        locked = await self.repo.get_for_update(request.id)
        assert locked is not None
        if locked.state != PENDING:
            raise Conflict(f"Change request {request_id} was already {locked.state}.")
        return locked


def _payload(data: ChangeRequestCreate) -> dict[str, Any]:
    """What the request asks for, as the operator reads it and as it is applied: the fields sent,
    each whole (a window sent as ``{"start": ...}`` shows and gets its default duration)."""
    payload = data.model_dump(mode="json", exclude={"kind", "comment"}, exclude_unset=True)
    if isinstance(data, PolicyUpdateRequest):
        payload["changes"] = data.changes.model_dump(mode="json", include=data.changes.model_fields_set)
    return payload
