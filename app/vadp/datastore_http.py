"""The portable disk transport: a snapshot's flat disk file, read over the datastore HTTP service.

vCenter (and ESXi) serve datastore files at ``/folder/<path>?dcPath=<dc>&dsName=<ds>``,
authenticated with the SOAP session cookie, and honour ``Range`` requests. On VMFS and NFS a
disk with a FlatVer2 backing keeps its data in ``<name>-flat.vmdk``, byte for byte the disk's
contents, so reading a byte range of the disk is one ranged GET.

What is read is the disk *as of the snapshot*: the backing file named in the snapshot's own
configuration. When a snapshot is taken, vCenter switches the running VM to a new delta
file (``<name>-000001.vmdk``) and leaves the file named in the snapshot untouched, so reads
never see writes made after the snapshot. Only a base disk can be read this way: if the VM
already had snapshots before ours, the snapshot's backing is itself a sparse delta, which
this transport refuses (``unsupported``) instead of returning half a disk; so do RDMs and
vSAN/vVol disks, which have no flat file. NBD/VDDK transports will handle those.

The simulator (vcsim) never creates delta disks, so there the running VM keeps writing the
very file the snapshot names; see the tests for what can and cannot be checked on it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import httpx

from app.vadp.errors import DiskIOError, VCenterError, VCenterErrorKind
from app.vadp.session import VCenterSession, parse_datastore_path
from app.vadp.types import SnapshotHandle, VmDisk, VmHandle
from app.vadp.vms import snapshot_disk

log = logging.getLogger(__name__)

NAME = "datastore-http"
DEFAULT_RETRIES = 4
_BACKOFF_S = 0.2
_BACKOFF_MAX_S = 5.0
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)|bytes\s+\*/(\d+)")
_OK_UPLOAD = frozenset({200, 201, 204})


@dataclass(frozen=True)
class DatastoreFile:
    """A file on a datastore: the datastore's moid and the path inside it."""

    datastore_moid: str
    datastore_name: str
    path: str

    @property
    def display(self) -> str:
        return f"[{self.datastore_name}] {self.path}"


def flat_file(disk: VmDisk) -> DatastoreFile:
    """The ``-flat.vmdk`` extent of a flat base disk; ``unsupported`` for anything else."""
    where = f"disk {disk.key} ({disk.label}, {disk.file_name or 'no file'})"
    if disk.backing != "flat":
        raise VCenterError(
            VCenterErrorKind.UNSUPPORTED,
            f"{where} has a {disk.backing} backing; the {NAME} transport reads only flat VMFS/NFS disks",
        )
    if disk.has_parent:
        raise VCenterError(
            VCenterErrorKind.UNSUPPORTED,
            f"{where} is a delta disk as of the snapshot (the VM had snapshots before this one); "
            f"the {NAME} transport reads only base disks: remove the older snapshots or use another "
            "transport",
        )
    if disk.datastore is None or not disk.file_name.endswith(".vmdk"):
        raise VCenterError(VCenterErrorKind.UNSUPPORTED, f"{where} has no datastore file to read")
    name, path = parse_datastore_path(disk.file_name)
    return DatastoreFile(
        disk.datastore.moid, disk.datastore.name or name, path[: -len(".vmdk")] + "-flat.vmdk"
    )


class DatastoreHttpTransport:
    """Reads snapshot disks with HTTP Range GETs of their flat files."""

    name = NAME

    def __init__(self, retries: int = DEFAULT_RETRIES) -> None:
        self.retries = retries

    def open(
        self, session: VCenterSession, vm: VmHandle, snapshot: SnapshotHandle, disk: VmDisk | int
    ) -> HttpDiskReader:
        if snapshot.vm_moid != vm.moid:
            raise ValueError(f"snapshot {snapshot.moid} belongs to VM {snapshot.vm_moid}, not {vm.moid}")
        key = disk if isinstance(disk, int) else disk.key
        as_of_snapshot = snapshot_disk(session, snapshot, key)
        target = flat_file(as_of_snapshot)
        url = session.file_url(target.datastore_moid, target.path)
        file_size = probe_size(session, url, target.display, self.retries)
        if file_size < as_of_snapshot.capacity_bytes:
            raise DiskIOError(
                f"the flat file {target.display} holds {file_size} bytes but disk {key} has a capacity of "
                f"{as_of_snapshot.capacity_bytes} bytes; the disk file is damaged or not a flat extent",
                file=target.display,
            )
        return HttpDiskReader(session, target, url, as_of_snapshot.capacity_bytes, self.retries)


class HttpDiskReader:
    """Ranged GETs of one flat file over the session's pooled client; thread-safe."""

    def __init__(
        self, session: VCenterSession, file: DatastoreFile, url: str, size: int, retries: int
    ) -> None:
        self._session = session
        self.file = file
        self._url = url
        self._size = size
        self._retries = retries
        self._closed = threading.Event()

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        if self._closed.is_set():
            raise ValueError(f"the reader of {self.file.display} is closed")
        if offset < 0 or length < 0 or offset + length > self._size:
            raise ValueError(
                f"range {offset}+{length} is outside disk file {self.file.display} of {self._size} bytes"
            )
        if length == 0:
            return b""
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        for attempt in _attempts(self._retries):
            try:
                response = self._session.http.get(self._url, headers=headers)
            except httpx.TransportError as exc:
                attempt.failed(_io_error(self.file, offset, f"{type(exc).__name__}: {exc}", transient=True))
                continue
            if response.status_code == 206:
                data = response.content
                start = _range_start(response)
                if len(data) == length and start in (None, offset):
                    return data
                attempt.failed(
                    _io_error(self.file, offset, f"got {len(data)} bytes at {start} for {length} bytes")
                )
                continue
            attempt.failed(_status_error(self.file, offset, response))
        raise AssertionError("unreachable")  # _attempts raises the last error

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> HttpDiskReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_size(session: VCenterSession, url: str, display: str, retries: int = DEFAULT_RETRIES) -> int:
    """The size of a datastore file, from a one-byte ranged GET; checks that ranges work."""
    for attempt in _attempts(retries):
        try:
            with session.http.stream("GET", url, headers={"Range": "bytes=0-0"}) as response:
                status, content_range = response.status_code, response.headers.get("content-range", "")
                if status in (206, 416):
                    match = _CONTENT_RANGE.fullmatch(content_range.strip())
                    total = match and (match.group(3) or match.group(4))
                    if total and total != "*":
                        return int(total)
                    attempt.failed(_io_error_at(display, 0, f"unusable Content-Range {content_range!r}"))
                    continue
                if status == 200:
                    raise VCenterError(
                        VCenterErrorKind.UNSUPPORTED,
                        f"the datastore service ignored a Range request for {display}; "
                        "it cannot serve disk reads",
                    )
                response.read()
                attempt.failed(_status_error_at(display, 0, response))
        except httpx.TransportError as exc:
            attempt.failed(_io_error_at(display, 0, f"{type(exc).__name__}: {exc}", transient=True))
    raise AssertionError("unreachable")


def get_file(session: VCenterSession, file: DatastoreFile, max_bytes: int) -> bytes:
    """A whole (small) datastore file, e.g. a ``.vmx``; refuses files over ``max_bytes``."""
    url = session.file_url(file.datastore_moid, file.path)
    for attempt in _attempts(DEFAULT_RETRIES):
        try:
            with session.http.stream("GET", url) as response:
                if response.status_code != 200:
                    response.read()
                    attempt.failed(_status_error_at(file.display, None, response))
                    continue
                data = bytearray()
                for piece in response.iter_bytes():
                    data += piece
                    if len(data) > max_bytes:
                        raise DiskIOError(
                            f"{file.display} is larger than {max_bytes} bytes", file=file.display
                        )
                return bytes(data)
        except httpx.TransportError as exc:
            attempt.failed(_io_error_at(file.display, None, f"{type(exc).__name__}: {exc}", transient=True))
    raise AssertionError("unreachable")


def put_file(session: VCenterSession, file: DatastoreFile, chunks: Iterable[bytes], size: int) -> int:
    """Stream ``chunks`` (exactly ``size`` bytes in all) into ``file`` with one HTTP PUT.

    The data is never held in memory as a whole: chunks go out as they are produced, with a
    ``Content-Length`` of ``size`` (the datastore service wants one). A stream cannot be
    replayed, so there is no retry here; the caller restarts the upload.
    """
    url = session.file_url(file.datastore_moid, file.path)
    counter = _CountingStream(chunks, size, file.display)
    try:
        response = session.http.put(
            url,
            content=iter(counter),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            timeout=httpx.Timeout(session.endpoint.timeout_s, write=max(session.endpoint.timeout_s, 300.0)),
        )
    except _SizeMismatch as exc:
        raise DiskIOError(str(exc), file=file.display, offset=exc.offset) from None
    except httpx.TransportError as exc:
        raise _io_error_at(
            file.display, counter.sent, f"upload broke off: {type(exc).__name__}: {exc}", transient=True
        ) from exc
    if response.status_code not in _OK_UPLOAD:
        raise _status_error_at(file.display, None, response, verb="writing")
    if counter.sent != size:
        raise DiskIOError(
            f"only {counter.sent} of {size} bytes were sent to {file.display}", file=file.display
        )
    return counter.sent


class _SizeMismatch(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class _CountingStream:
    """Passes chunks through, counting them, and stops a source that over- or under-delivers."""

    def __init__(self, chunks: Iterable[bytes], size: int, display: str) -> None:
        self._chunks = chunks
        self._size = size
        self._display = display
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if not chunk:
                continue
            if self.sent + len(chunk) > self._size:
                raise _SizeMismatch(
                    f"the data for {self._display} is longer than the declared {self._size} bytes",
                    self.sent,
                )
            self.sent += len(chunk)
            yield bytes(chunk)
        if self.sent != self._size:
            raise _SizeMismatch(
                f"the data for {self._display} ended after {self.sent} of {self._size} bytes", self.sent
            )


class _Attempt:
    def __init__(self) -> None:
        self.error: VCenterError | None = None

    def failed(self, error: VCenterError) -> None:
        self.error = error


def _attempts(retries: int) -> Iterator[_Attempt]:
    """Yield attempts until one returns; re-raise a permanent error at once, the last one at the end."""
    delay = _BACKOFF_S
    last: VCenterError | None = None
    for number in range(retries + 1):
        attempt = _Attempt()
        yield attempt
        if attempt.error is None:  # the body returned, or raised something of its own
            return
        last = attempt.error
        if not last.transient:
            raise last
        if number < retries:
            log.info("retrying after %s (attempt %d of %d)", last.message, number + 1, retries + 1)
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)
    assert last is not None
    raise last


def _range_start(response: httpx.Response) -> int | None:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
    return int(match.group(1)) if match and match.group(1) else None


def _io_error(file: DatastoreFile, offset: int, reason: str, transient: bool = False) -> DiskIOError:
    return _io_error_at(file.display, offset, reason, transient)


def _io_error_at(display: str, offset: int | None, reason: str, transient: bool = False) -> DiskIOError:
    where = f" at offset {offset}" if offset is not None else ""
    return DiskIOError(
        f"reading {display}{where} failed: {reason}", file=display, offset=offset, transient=transient
    )


def _status_error(file: DatastoreFile, offset: int, response: httpx.Response) -> DiskIOError:
    return _status_error_at(file.display, offset, response)


def _status_error_at(
    display: str, offset: int | None, response: httpx.Response, verb: str = "reading"
) -> DiskIOError:
    status = response.status_code
    where = f" at offset {offset}" if offset is not None else ""
    text = f"{verb} {display}{where} failed: HTTP {status} {response.reason_phrase}"
    if status == 404:
        return DiskIOError(
            f"{text}: the file does not exist on the datastore",
            file=display,
            offset=offset,
            kind=VCenterErrorKind.NOT_FOUND,
            transient=False,
        )
    if status in (401, 403):
        return DiskIOError(
            f"{text}: the vCenter refused the session (expired, or the user lacks the "
            "Datastore.Browse / FileManagement privileges)",
            file=display,
            offset=offset,
            kind=VCenterErrorKind.AUTH_FAILED,
            transient=False,
        )
    if status == 416:
        return DiskIOError(f"{text}: the range lies beyond the end of the file", file=display, offset=offset)
    return DiskIOError(text, file=display, offset=offset, transient=status in _RETRY_STATUSES)
