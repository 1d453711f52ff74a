"""VM tags read through the simulator's vAPI REST endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pyVmomi import vim

from app.vadp import inventory, tags
from app.vadp.types import VCenterEndpoint
from tests.support.vcsim import VcsimServer
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp import reference
from tests.vadp.reference import closed_port, find

pytestmark = pytest.mark.vcsim

TAGGING = "/com/vmware/cis/tagging"


@pytest.fixture
def tagged(vcsim_factory: VcsimFactory) -> VcsimServer:
    """A dedicated simulator (tags are state) with a tag-rich VM, a tagged host and a spare tag."""
    return vcsim_factory()


@pytest.fixture
def rest(tagged: VcsimServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tagged.url.replace("/sdk", "/rest"), timeout=10) as client:
        login = client.post("/com/vmware/cis/session", auth=(tagged.username, tagged.password))
        login.raise_for_status()
        client.headers[tags.SESSION_HEADER] = login.json()["value"]
        yield client


def create(rest: httpx.Client, kind: str, spec: dict[str, Any]) -> str:
    response = rest.post(f"{TAGGING}/{kind}", json={"create_spec": spec})
    response.raise_for_status()
    return str(response.json()["value"])


def new_tag(rest: httpx.Client, category_id: str, name: str) -> str:
    return create(rest, "tag", {"name": name, "description": "", "category_id": category_id})


def new_category(rest: httpx.Client, name: str) -> str:
    spec = {"name": name, "description": "", "cardinality": "MULTIPLE", "associable_types": []}
    return create(rest, "category", spec)


def attach(rest: httpx.Client, tag_id: str, kind: str, moid: str) -> None:
    body = {"object_id": {"type": kind, "id": moid}}
    rest.post(f"{TAGGING}/tag-association/id:{tag_id}?~action=attach", json=body).raise_for_status()


def moids(server: VcsimServer, kind: Any, *names: str) -> list[str]:
    with reference.session(server) as si:
        return [find(si, kind, name)._moId for name in names]


def test_vm_tags_are_reported_as_category_and_tag(tagged: VcsimServer, rest: httpx.Client) -> None:
    vm, other_vm = moids(tagged, vim.VirtualMachine, "DC0_H0_VM0", "DC0_C0_RP0_VM1")
    (host,) = moids(tagged, vim.HostSystem, "DC0_H0")
    backup, env = new_category(rest, "backup"), new_category(rest, "env")
    gold, prod, silver = (
        new_tag(rest, backup, "gold"),
        new_tag(rest, env, "prod"),
        new_tag(rest, backup, "silver"),
    )
    attach(rest, prod, "VirtualMachine", vm)
    attach(rest, gold, "VirtualMachine", vm)
    attach(rest, silver, "VirtualMachine", other_vm)
    attach(rest, gold, "HostSystem", host)  # not a VM: must not show up anywhere

    snapshot = inventory.read_inventory(reference.endpoint(tagged))

    assert snapshot.tags_available
    by_name = {v.name: v.tags for v in snapshot.vms}
    assert by_name.pop("DC0_H0_VM0") == ("backup:gold", "env:prod")
    assert by_name.pop("DC0_C0_RP0_VM1") == ("backup:silver",)
    assert by_name == {"DC0_H0_VM1": (), "DC0_C0_RP0_VM0": ()}


def test_tag_names_come_from_their_category(tagged: VcsimServer, rest: httpx.Client) -> None:
    """Two tags with the same name in different categories stay distinct."""
    (vm,) = moids(tagged, vim.VirtualMachine, "DC0_H0_VM1")
    for category in ("site", "owner"):
        attach(rest, new_tag(rest, new_category(rest, category), "a"), "VirtualMachine", vm)
    assert tags.read_vm_tags(reference.endpoint(tagged)) == {vm: ("owner:a", "site:a")}


def test_missing_rest_endpoint_leaves_the_inventory_intact(
    vcsim: VcsimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vCenter whose /rest answers 404 still has an inventory, just no tags."""
    expected = inventory.read_inventory(reference.endpoint(vcsim))
    monkeypatch.setattr(tags, "_SESSION", "/com/vmware/cis/no-such-service")
    snapshot = inventory.read_inventory(reference.endpoint(vcsim))
    assert not snapshot.tags_available
    assert snapshot.vms == expected.vms
    assert snapshot.hosts == expected.hosts


def test_unreachable_rest_endpoint_means_no_tags() -> None:
    endpoint = VCenterEndpoint(f"http://127.0.0.1:{closed_port()}/sdk", "u", "p", timeout_s=2)
    assert tags.read_vm_tags(endpoint) is None
