"""Object keys of the repository (the layout is documented in repository.py).

Kept apart from ``repository.py`` so that the writers, GC and verify can name keys without importing
the ``Repository`` class itself.

Restore points and exports live under distinct top-level prefixes, for their manifests and for their
index objects alike: a listing of one never yields the other, an id may name both a restore point and
an export without either touching the other, and deleting one's index prefix cannot reach the other's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

CONFIG_KEY = "config"
MANIFEST_PREFIX = "restore-points/"
INDEX_PREFIX = "indexes/"
EXPORT_PREFIX = "exports/"
EXPORT_INDEX_PREFIX = "export-indexes/"

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_id(value: str, kind: str = "restore point") -> str:
    """Ids become object keys, so they are restricted to portable characters."""
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"invalid {kind} id {value!r}: 1-128 of [A-Za-z0-9._-], not starting with . _ -")
    return value


def validate_restore_point_id(restore_point_id: str) -> str:
    return validate_id(restore_point_id, "restore point")


def validate_export_id(export_id: str) -> str:
    return validate_id(export_id, "export")


def manifest_key(restore_point_id: str) -> str:
    return MANIFEST_PREFIX + validate_restore_point_id(restore_point_id)


def index_prefix(restore_point_id: str) -> str:
    return f"{INDEX_PREFIX}{validate_restore_point_id(restore_point_id)}/"


def export_key(export_id: str) -> str:
    return EXPORT_PREFIX + validate_export_id(export_id)


def export_index_prefix(export_id: str) -> str:
    return f"{EXPORT_INDEX_PREFIX}{validate_export_id(export_id)}/"


def ids_under(keys: Iterable[str], prefix: str) -> list[str]:
    """The sorted ids of the manifests among ``keys`` (a listing of ``prefix``), deeper keys ignored."""
    ids = (key[len(prefix) :] for key in keys if key.startswith(prefix))
    return sorted(i for i in ids if i and "/" not in i)
