"""Imports every ORM model so that ``Base.metadata`` is complete (Alembic, tests)."""

from app.auth.models import ApiKey
from app.db.base import Base
from app.inventory.models import Datastore, Host, VirtualMachine, vm_datastores
from app.policies.models import Policy
from app.proxies.models import Proxy, proxy_hosts
from app.tenants.models import Tenant
from app.vcenters.models import VCenter

__all__ = [
    "ApiKey",
    "Base",
    "Datastore",
    "Host",
    "Policy",
    "Proxy",
    "Tenant",
    "VCenter",
    "VirtualMachine",
    "proxy_hosts",
    "vm_datastores",
]
