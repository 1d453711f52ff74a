"""What backup_disk reads from: anything with a thread-safe ``read_at(offset, length)``.

The proxy's transports (datastore HTTP range reads today, NBD/VDDK later) implement this; ``FileReader``
covers local images (tests, benchmarks, file-based disks). ``DiskImageReader`` (reader.py) implements it
too, so a restore point can itself be the source of a copy.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

from app.chunkstore.backend import BytesLike


@runtime_checkable
class DiskReader(Protocol):
    def read_at(self, offset: int, length: int) -> BytesLike:
        """Return exactly ``length`` bytes at ``offset`` (may be called from several threads at once).

        Returning ``bytes`` is fastest: the zero check is then a single memcmp.
        """
        ...


class FileReader:
    """``pread`` on a file descriptor: no shared file position, so safe and parallel across threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY)

    @property
    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def read_at(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) == length:
            return data
        parts = [data]  # short reads happen on some filesystems; loop until done or EOF
        got = len(data)
        while got < length:
            more = os.pread(self._fd, length - got, offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
