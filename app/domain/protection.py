"""Which policy protects a VM, decided the same way everywhere.

A VM is selected by a policy when its id is listed, its folder path is under one of the
policy's folder prefixes, or it carries one of the policy's tags, and it is not excluded by
the same policy. Two enabled policies selecting one VM is a *conflict*: it is reported on the
VM, never resolved silently, because either choice could break someone's RPO or retention.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class ProtectionStatus(StrEnum):
    PROTECTED = "protected"
    UNPROTECTED = "unprotected"
    EXCLUDED = "excluded"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Selector:
    vm_ids: frozenset[str] = frozenset()
    folders: tuple[str, ...] = ()
    tags: frozenset[str] = frozenset()

    def match(self, vm: VmFacts) -> str | None:
        """Why the VM matches (for the reason shown to users), or None."""
        if vm.vm_id in self.vm_ids:
            return "listed explicitly"
        for prefix in self.folders:
            if folder_under(vm.folder_path, prefix):
                return f"in folder {prefix}"
        for tag in self.tags:
            if tag_matches(tag, vm.tags):
                return f"tagged {tag}"
        return None


@dataclass(frozen=True)
class PolicyRule:
    policy_id: str
    name: str
    enabled: bool
    selection: Selector
    exclusions: Selector


@dataclass(frozen=True)
class VmFacts:
    vm_id: str
    folder_path: str
    tags: frozenset[str]
    gone: bool = False


@dataclass(frozen=True)
class Protection:
    status: ProtectionStatus
    policy_id: str | None
    reason: str
    conflicting_policy_ids: tuple[str, ...] = field(default_factory=tuple)


def folder_under(path: str, prefix: str) -> bool:
    """Segment-aware prefix: ``/DC0/vm/Prod`` covers ``/DC0/vm/Prod/db`` but not ``/DC0/vm/Production``."""
    prefix = prefix.rstrip("/")
    if not prefix:
        return True
    return path == prefix or path.startswith(prefix + "/")


def tag_matches(selector_tag: str, vm_tags: Iterable[str]) -> bool:
    """``category:tag`` matches exactly; a bare ``tag`` matches that tag in any category."""
    if ":" in selector_tag:
        return selector_tag in vm_tags
    return any(t == selector_tag or t.split(":", 1)[-1] == selector_tag for t in vm_tags)


def resolve(vm: VmFacts, policies: Sequence[PolicyRule]) -> Protection:
    if vm.gone:
        return Protection(ProtectionStatus.UNPROTECTED, None, "the VM no longer exists in vCenter")
    matched: list[tuple[PolicyRule, str]] = []
    excluded: list[tuple[PolicyRule, str]] = []
    disabled: list[PolicyRule] = []
    for policy in policies:
        why = policy.selection.match(vm)
        if why is None:
            continue
        excluded_why = policy.exclusions.match(vm)
        if excluded_why is not None:
            excluded.append((policy, excluded_why))
        elif not policy.enabled:
            disabled.append(policy)
        else:
            matched.append((policy, why))
    if len(matched) > 1:
        names = " and ".join(f"'{p.name}'" for p, _ in matched)
        return Protection(
            ProtectionStatus.CONFLICT,
            None,
            f"selected by policies {names}; narrow their selections or add an exclusion so that "
            "exactly one policy protects this VM",
            tuple(sorted(p.policy_id for p, _ in matched)),
        )
    if matched:
        policy, why = matched[0]
        return Protection(ProtectionStatus.PROTECTED, policy.policy_id, f"policy '{policy.name}': {why}")
    if excluded:
        policy, why = excluded[0]
        return Protection(ProtectionStatus.EXCLUDED, None, f"excluded by policy '{policy.name}' ({why})")
    if disabled:
        return Protection(
            ProtectionStatus.UNPROTECTED, None, f"selected only by disabled policy '{disabled[0].name}'"
        )
    return Protection(ProtectionStatus.UNPROTECTED, None, "no policy selects this VM")
