"""Writing files into a running VM through vCenter guest operations (VMware Tools).

``GuestFileManager.InitiateFileTransferToGuest`` returns a one-time URL on the ESXi host (its host
part is ``*`` when vCenter leaves it to the client to use the address it connected to); the file is
sent with one HTTP PUT. Directories are made with ``MakeDirectoryInGuest``. Guest operations need
VMware Tools running and an account of the guest OS; the credentials are used for these calls only.
Symbolic links cannot be created through guest operations, so the caller reports them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
from pyVmomi import vim

from app.vadp.address import ssl_context
from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.session import VCenterSession
from app.vadp.types import VmHandle


class GuestFiles(Protocol):
    """Where a file restore writes when it delivers into the VM."""

    def make_directory(self, path: str) -> None: ...

    def put_file(
        self, path: str, chunks: Iterable[bytes], size: int, mode: int | None, overwrite: bool
    ) -> None:
        """Write exactly ``size`` bytes; raises when the file exists and ``overwrite`` is false."""
        ...


class VimGuestFiles:
    def __init__(self, session: VCenterSession, vm: VmHandle, username: str, password: str) -> None:
        self._session = session
        self._vm = session.vm(vm)
        self._auth = vim.vm.guest.NamePasswordAuthentication(  # type: ignore[no-untyped-call]
            username=username, password=password, interactiveSession=False
        )
        manager = session.content.guestOperationsManager
        if manager is None:
            raise VCenterError(VCenterErrorKind.API_ERROR, "this vCenter offers no guest operations")
        self._files: Any = manager.fileManager

    def make_directory(self, path: str) -> None:
        try:
            with self._session.guard(f"creating directory {path} in the guest"):
                self._files.MakeDirectoryInGuest(
                    vm=self._vm, auth=self._auth, directoryPath=path, createParentDirectories=True
                )
        except VCenterError as exc:
            if "FileAlreadyExists" not in exc.message and "already exists" not in exc.message:
                raise

    def put_file(
        self, path: str, chunks: Iterable[bytes], size: int, mode: int | None, overwrite: bool
    ) -> None:
        attributes: Any = vim.vm.guest.FileManager.PosixFileAttributes()  # type: ignore[no-untyped-call]
        if mode is not None:
            attributes.permissions = mode
        with self._session.guard(f"preparing the transfer of {path} into the guest"):
            url = self._files.InitiateFileTransferToGuest(
                vm=self._vm,
                auth=self._auth,
                guestFilePath=path,
                fileAttributes=attributes,
                fileSize=size,
                overwrite=overwrite,
            )
        target = self._resolve(str(url))
        try:
            response = httpx.put(
                target,
                content=iter(chunks),
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
                verify=ssl_context(self._session.endpoint.verify_tls),
                timeout=httpx.Timeout(self._session.endpoint.timeout_s, write=300.0),
            )
        except httpx.TransportError as exc:
            raise VCenterError(
                VCenterErrorKind.UNREACHABLE, f"sending {path} into the guest broke off: {exc}"
            ) from exc
        if response.status_code >= 300:
            raise VCenterError(
                VCenterErrorKind.API_ERROR,
                f"the ESXi host refused {path} ({response.status_code}): {response.text[:300]}",
            )

    def _resolve(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.hostname in (None, "*"):
            netloc = self._session.address.display
            return urlunsplit(
                (parts.scheme or self._session.address.scheme, netloc, parts.path, parts.query, "")
            )
        return url
