"""Wire models of integrations, their delivery log, and the ticket a ticketing system sends in."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AnyUrl, Discriminator, Field, Tag, UrlConstraints, model_validator

from app.restores.schemas import ApplicationRestoreCreate, FileRestoreCreate, VmRestoreCreate
from app.schemas import InputModel, Instant, OutputModel

RestoreEventType = Literal[
    "restore.accepted",
    "restore.awaiting_approval",
    "restore.initiated",
    "restore.progress",
    "restore.completed",
    "restore.failed",
    "restore.cancelled",
    "restore.sla_at_risk",
    "restore.sla_breached",
]
AlertEventType = Literal["alert.opened", "alert.severity_changed", "alert.closed"]
EventType = Literal[RestoreEventType, AlertEventType]

RESTORE_EVENTS: tuple[str, ...] = RestoreEventType.__args__  # type: ignore[attr-defined]
ALERT_EVENTS: tuple[str, ...] = AlertEventType.__args__  # type: ignore[attr-defined]

WebhookUrl = Annotated[AnyUrl, UrlConstraints(max_length=2000, allowed_schemes=["http", "https"])]

DeliveryState = Literal["pending", "delivered", "failed"]


class IntegrationCreate(InputModel):
    name: str = Field(min_length=1, max_length=200, description="What it is, e.g. 'ServiceNow'.")
    tenant_id: uuid.UUID | None = Field(
        default=None,
        description="Operators: the tenant whose restores it requests and follows, or null for an "
        "operators' integration (it receives the monitoring alerts of every tenant). Customers: "
        "leave it out (their own tenant).",
    )
    url: WebhookUrl | None = Field(
        default=None, description="Where outbound messages are POSTed; null: inbound only."
    )
    events: list[EventType] = Field(
        default_factory=list,
        max_length=20,
        description="Outbound event types to send (empty: all). A tenant's integration gets "
        "restore.* events, an operators' one alert.* events.",
    )
    enabled: bool = True


class IntegrationUpdate(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    url: WebhookUrl | None = Field(default=None, description="null: stop sending outbound messages.")
    events: list[EventType] | None = Field(default=None, max_length=20)
    enabled: bool | None = Field(
        default=None, description="A disabled integration neither accepts tickets nor receives messages."
    )


class IntegrationRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID | None = Field(description="Null: an operators' integration (alerts)")
    name: str
    url: str | None
    events: list[str]
    enabled: bool
    inbound_url: str | None = Field(
        description="Tenant integrations: the path the ticketing system POSTs signed tickets to."
    )
    created_at: datetime
    updated_at: datetime


class IntegrationCreated(IntegrationRead):
    secret: str = Field(
        description="The signing secret (whsec_...), for both directions. Shown only in this "
        "response; store it in the ticketing system now."
    )


class DeliveryRead(OutputModel):
    id: uuid.UUID
    integration_id: uuid.UUID
    event_type: str
    subject: str = Field(description="What the message is about ('restore:<id>', 'alert:<id>')")
    sequence: int = Field(description="Order within the subject: sent only after the previous one")
    message_id: str = Field(description="The webhook-id header, the same on every attempt")
    state: DeliveryState
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    expires_at: datetime = Field(description="Retries stop then and the message is failed")
    last_attempt_at: datetime | None
    last_status: int | None = Field(description="HTTP status of the last attempt (null: no answer)")
    last_error: str | None
    delivered_at: datetime | None
    payload: dict[str, Any]


# -- inbound tickets --------------------------------------------------------------------------------


class TicketFields(InputModel):
    """What a ticket adds to a restore request: who asked, when, for which VM, from which point."""

    request_model: ClassVar[type[InputModel]]

    ticket_id: str = Field(
        min_length=1,
        max_length=255,
        description="The ticket's id: one restore per ticket, whatever the retries.",
    )
    created_at: Instant = Field(
        description="When the ticket was opened: the restore's SLA clocks start then."
    )
    vm_id: uuid.UUID = Field(description="The VM to restore (from GET /api/v1/vms).")
    restore_point_id: uuid.UUID | None = Field(
        default=None, description="The restore point; or send point_in_time instead."
    )
    point_in_time: Instant | None = Field(
        default=None,
        description="Restore the VM's latest restore point (of the kind the type needs) taken at or "
        "before this instant.",
    )

    @model_validator(mode="after")
    def _one_point(self) -> TicketFields:
        if (self.restore_point_id is None) == (self.point_in_time is None):
            raise ValueError("send either restore_point_id or point_in_time (exactly one)")
        return self

    def restore_request(self, point_id: uuid.UUID) -> Any:
        """The matching ``POST /restores`` body, with the point the ticket resolved to."""
        fields = set(type(self).request_model.model_fields)
        return type(self).request_model.model_validate(
            {**self.model_dump(include=fields), "restore_point_id": point_id}
        )


class VmTicket(TicketFields, VmRestoreCreate):
    request_model = VmRestoreCreate


class FilesTicket(TicketFields, FileRestoreCreate):
    request_model = FileRestoreCreate


class ApplicationTicket(TicketFields, ApplicationRestoreCreate):
    request_model = ApplicationRestoreCreate


def _ticket_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "vm"))
    return str(getattr(value, "type", "vm"))


Ticket = Annotated[
    Annotated[VmTicket, Tag("vm")]
    | Annotated[FilesTicket, Tag("files")]
    | Annotated[ApplicationTicket, Tag("application")],
    Discriminator(_ticket_type),
]
