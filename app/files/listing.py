"""Order and pages of directory listings.

Entries are sorted by case-folded name, then by the name itself (so ``a`` < ``B`` < ``c``, and ``B``
before ``b``), whatever order the filesystem keeps them in: the same directory reads the same way on
ext, XFS, NTFS and FAT. A page's cursor is the last name it holds; the next page starts after that name
in this order, so a cursor stays valid across reopenings (a restore point never changes) and even names
that are not in the directory position correctly.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.files.models import DirectoryPage, Entry

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000


def sort_key(name: str) -> tuple[str, str]:
    return name.casefold(), name


@dataclass(frozen=True, slots=True)
class Listing:
    """One directory's entries in listing order, with their sort keys for paging."""

    path: str
    entries: tuple[Entry, ...]
    keys: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, path: str, entries: Iterable[Entry]) -> Listing:
        ordered = sorted(entries, key=lambda entry: sort_key(entry.name))
        return cls(path, tuple(ordered), tuple(sort_key(entry.name) for entry in ordered))

    def page(self, cursor: str | None, limit: int) -> DirectoryPage:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
        start = 0 if cursor is None else bisect_right(self.keys, sort_key(cursor))
        entries: Sequence[Entry] = self.entries[start : start + limit]
        more = start + limit < len(self.entries)
        return DirectoryPage(
            path=self.path,
            entries=list(entries),
            total=len(self.entries),
            next_cursor=entries[-1].name if more and entries else None,
        )
