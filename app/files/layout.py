"""Where a file's bytes are: a list of extents over a volume, with holes, built from a filesystem's block map.

Every driver reduces a regular file to a ``Layout`` (ext extents or block map, XFS bmap, NTFS data runs, a
FAT cluster chain), so reading files is one piece of code for all filesystems: ``FileStream`` reads the
extents straight from the volume's source, without the parser and without its lock, and can stream them
with read-ahead. Holes (sparse ranges, unwritten/preallocated extents, NTFS data beyond the valid data
length) read as zeros, which is what the filesystem itself returns for them.

Layouts are checked when built: extents in order, none overlapping, none beyond the end of the volume. A
file whose map fails these checks is damaged, and reading it would return other files' bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.files.errors import CorruptFilesystem
from app.files.source import ByteSource, BytesSource


@dataclass(frozen=True, slots=True)
class Extent:
    """``length`` bytes of the file at ``offset``, stored at ``source_offset`` (None: a hole, zeros)."""

    offset: int
    length: int
    source_offset: int | None


@dataclass(frozen=True, slots=True)
class Layout:
    """A file's content: ``extents`` cover ``[0, size)`` in order, reading from ``source``."""

    source: ByteSource
    size: int
    extents: tuple[Extent, ...]


def inline_layout(data: bytes) -> Layout:
    """A file whose bytes live inside the filesystem's metadata (resident NTFS data, ext4 inline data)."""
    return Layout(BytesSource(data), len(data), (Extent(0, len(data), 0),) if data else ())


def whole_source_layout(source: ByteSource, size: int) -> Layout:
    """A file that is all of ``source`` (data only a parser can decode, such as NTFS compressed files)."""
    return Layout(source, size, (Extent(0, size, 0),) if size else ())


def layout_from_blocks(
    source: ByteSource,
    size: int,
    block_size: int,
    blocks: Iterable[tuple[int, int, int | None]],
    *,
    what: str,
    base: int = 0,
    valid_size: int | None = None,
) -> Layout:
    """Build a layout from ``(first logical block, block count, first physical block or None)`` runs.

    Runs must come in logical order; gaps between them and after the last are holes, and everything is
    cut at ``size`` (filesystems allocate past the end: preallocation, the rest of the last block).
    Physical block ``n`` is at ``base + n * block_size`` in ``source``. Bytes at or beyond
    ``valid_size`` read as zeros (NTFS's valid data length). ``what`` names the file in errors.
    """
    valid = size if valid_size is None else max(0, min(valid_size, size))
    limit = source.size
    extents: list[Extent] = []
    position = 0  # bytes of the file covered so far

    def add(offset: int, length: int, source_offset: int | None) -> None:
        if length <= 0:
            return
        last = extents[-1] if extents else None
        if last is not None and last.offset + last.length == offset:
            if source_offset is None and last.source_offset is None:
                extents[-1] = Extent(last.offset, last.length + length, None)
                return
            if (
                source_offset is not None
                and last.source_offset is not None
                and last.source_offset + last.length == source_offset
            ):
                extents[-1] = Extent(last.offset, last.length + length, last.source_offset)
                return
        extents.append(Extent(offset, length, source_offset))

    for logical, count, physical in blocks:
        if count <= 0 or logical < 0 or (physical is not None and physical < 0):
            raise CorruptFilesystem(
                f"{what}: its block map has an invalid entry ({logical}, {count}, {physical})"
            )
        start = logical * block_size
        if start < position:
            raise CorruptFilesystem(f"{what}: its block map has overlapping or unordered entries")
        if start >= size:
            break  # allocated beyond the end of the file
        end = min(start + count * block_size, size)
        add(position, start - position, None)
        if physical is None:
            add(start, end - start, None)
        else:
            at = base + physical * block_size
            if at + (end - start) > limit:
                raise CorruptFilesystem(
                    f"{what}: its data would lie beyond the end of the volume (block {physical + count - 1})"
                )
            data_end = min(end, max(start, valid))
            add(start, data_end - start, at)
            add(data_end, end - data_end, None)
        position = end
    add(position, size - position, None)
    return Layout(source, size, tuple(extents))
