"""Bulk property reads through the PropertyCollector.

Reading ``vm.config.hardware.device`` attribute by attribute costs one round trip per
object and property, which does not scale to vCenters with thousands of VMs; worse, asking
the govmomi simulator (and some real vCenters) for a property that is unset fails the
whole request. The PropertyCollector returns many objects per call, pages with a token, and
simply leaves unset properties out of the answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

PAGE_SIZE = 500

_PC: Any = vmodl.query.PropertyCollector  # its data-object constructors are unannotated


@dataclass(frozen=True)
class ObjectProperties:
    """One managed object's requested properties; unset ones are absent from ``props``."""

    moid: str
    type: Any  # the pyVmomi class, e.g. vim.HostSystem
    props: Mapping[str, Any]

    def get(self, path: str, default: Any = None) -> Any:
        return self.props.get(path, default)


def collect(service_instance: Any, paths_by_type: Mapping[Any, Sequence[str]]) -> list[ObjectProperties]:
    """Read ``paths_by_type`` for every object of those types below the root folder."""
    content = service_instance.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, list(paths_by_type), True)
    try:
        spec = _filter_spec(view, paths_by_type)
        return list(retrieve(content.propertyCollector, spec))
    finally:
        view.DestroyView()


def _filter_spec(view: Any, paths_by_type: Mapping[Any, Sequence[str]]) -> Any:
    traverse = _PC.TraversalSpec(name="traverseView", path="view", skip=False, type=vim.view.ContainerView)
    return _PC.FilterSpec(
        objectSet=[_PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
        propSet=[_PC.PropertySpec(type=kind, pathSet=list(paths)) for kind, paths in paths_by_type.items()],
    )


def retrieve(collector: Any, spec: Any, page_size: int = PAGE_SIZE) -> Iterator[ObjectProperties]:
    """Yield every object of ``spec``, following ``ContinueRetrievePropertiesEx`` tokens."""
    result = collector.RetrievePropertiesEx(specSet=[spec], options=_PC.RetrieveOptions(maxObjects=page_size))
    while result is not None:
        for content in result.objects or ():
            props = {prop.name: prop.val for prop in content.propSet or ()}
            yield ObjectProperties(moid=content.obj._moId, type=type(content.obj), props=props)
        if not result.token:
            return
        result = collector.ContinueRetrievePropertiesEx(token=result.token)
