"""Imports every ORM model so that ``Base.metadata`` is complete (Alembic, tests)."""

from app.alerts.models import Alert
from app.audit.models import AuditEvent
from app.auth.models import ApiKey
from app.changes.models import ChangeRequest
from app.compliance.models import ProtectionSpan, RestoreSla, RpoBreach
from app.db.base import Base
from app.integrations.models import Delivery, Integration, WebhookReceipt
from app.inventory.models import Datastore, Host, VirtualMachine, vm_datastores
from app.jobs.models import Job
from app.policies.models import Policy
from app.proxies.models import Proxy, proxy_hosts
from app.restore_points.models import RestorePoint
from app.restores.models import Restore
from app.scheduler.models import MaintenanceRun
from app.tenants.models import Tenant
from app.vcenters.models import VCenter

__all__ = [
    "Alert",
    "ApiKey",
    "AuditEvent",
    "Base",
    "ChangeRequest",
    "Datastore",
    "Delivery",
    "Host",
    "Integration",
    "Job",
    "MaintenanceRun",
    "Policy",
    "ProtectionSpan",
    "Proxy",
    "Restore",
    "RestorePoint",
    "RestoreSla",
    "RpoBreach",
    "Tenant",
    "VCenter",
    "VirtualMachine",
    "WebhookReceipt",
    "proxy_hosts",
    "vm_datastores",
]
