"""The pyvmomi implementation of the control plane's vCenter gateway."""

from __future__ import annotations

from app.vadp.connection import test_connection_async
from app.vadp.inventory import read_inventory_async
from app.vadp.types import AboutInfo, InventorySnapshot, VCenterEndpoint


class PyVmomiGateway:
    async def test_connection(self, endpoint: VCenterEndpoint) -> AboutInfo:
        return await test_connection_async(endpoint)

    async def read_inventory(self, endpoint: VCenterEndpoint) -> InventorySnapshot:
        return await read_inventory_async(endpoint)
