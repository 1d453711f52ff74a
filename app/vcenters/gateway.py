"""The narrow protocol through which the control plane talks to vCenter.

Feature code depends on this protocol, not on pyvmomi; :mod:`app.vadp.gateway` implements it.
"""

from __future__ import annotations

from typing import Protocol

from app.vadp.types import AboutInfo, InventorySnapshot, VCenterEndpoint


class VCenterGateway(Protocol):
    async def test_connection(self, endpoint: VCenterEndpoint) -> AboutInfo: ...

    async def read_inventory(self, endpoint: VCenterEndpoint) -> InventorySnapshot: ...
