"""vSphere tags of VMs, read through the vAPI REST endpoint (``/rest``).

Tags are not part of the SOAP API, so they come from a second, independent client. They are
a nicety (policies can select VMs by tag), not a requirement: ESXi hosts, old or locked-down
vCenters and proxies that only pass ``/sdk`` have no usable ``/rest``. Any failure here
therefore yields ``None`` ("tags unavailable") and never fails the inventory read.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import httpx

from app.vadp.address import SdkAddress, ssl_context
from app.vadp.connection import scrub
from app.vadp.types import VCenterEndpoint

log = logging.getLogger(__name__)

SESSION_HEADER = "vmware-api-session-id"
_SESSION = "/com/vmware/cis/session"
_CATEGORY = "/com/vmware/cis/tagging/category"
_TAG = "/com/vmware/cis/tagging/tag"
_ATTACHED_OBJECTS = "/com/vmware/cis/tagging/tag-association?~action=list-attached-objects-on-tags"


def read_vm_tags(endpoint: VCenterEndpoint) -> dict[str, tuple[str, ...]] | None:
    """Map VM moid to its sorted ``"<category>:<tag>"`` strings; ``None`` if unavailable."""
    address = SdkAddress.parse(endpoint.url)
    try:
        with httpx.Client(
            base_url=address.rest_url,
            verify=ssl_context(endpoint.verify_tls),
            timeout=endpoint.timeout_s,
        ) as client:
            _login(client, endpoint)
            try:
                return _read_vm_tags(client)
            finally:
                _logout(client)
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # ValueError covers bad JSON; Key/Type/AttributeError an unexpected JSON shape.
        reason = scrub(f"{type(exc).__name__}: {exc}", endpoint.password)
        log.warning("tags of vCenter %s are unavailable: %s", address.display, reason)
        return None


def _login(client: httpx.Client, endpoint: VCenterEndpoint) -> None:
    response = client.post(_SESSION, auth=(endpoint.username, endpoint.password))
    response.raise_for_status()
    client.headers[SESSION_HEADER] = str(response.json()["value"])


def _logout(client: httpx.Client) -> None:
    try:
        client.delete(_SESSION)
    except httpx.HTTPError as exc:
        log.debug("closing the vAPI session failed: %s", type(exc).__name__)


def _value(response: httpx.Response) -> Any:
    """The ``value`` of a ``/rest`` answer (omitted by some servers when empty)."""
    response.raise_for_status()
    return response.json().get("value")


def _read_vm_tags(client: httpx.Client) -> dict[str, tuple[str, ...]]:
    tag_ids: list[str] = _value(client.get(_TAG)) or []
    if not tag_ids:
        return {}
    categories: dict[str, str] = {}
    for category_id in _value(client.get(_CATEGORY)) or []:
        categories[category_id] = _value(client.get(f"{_CATEGORY}/id:{category_id}"))["name"]
    labels: dict[str, str] = {}
    for tag_id in tag_ids:
        tag = _value(client.get(f"{_TAG}/id:{tag_id}"))
        category = categories.get(tag.get("category_id", ""), "")
        labels[tag_id] = f"{category}:{tag['name']}"

    attached = _value(client.post(_ATTACHED_OBJECTS, json={"tag_ids": tag_ids})) or []
    by_vm: defaultdict[str, set[str]] = defaultdict(set)
    for entry in attached:
        label = labels.get(entry["tag_id"])
        for obj in entry.get("object_ids") or []:
            if label is not None and obj.get("type") == "VirtualMachine":
                by_vm[obj["id"]].add(label)
    return {moid: tuple(sorted(names)) for moid, names in by_vm.items()}
