"""Connecting to a vCenter, and turning every way that can fail into an actionable error.

pyVmomi reports failures as a zoo of exception types (socket errors, ``ssl`` errors,
``http.client`` errors, SOAP faults and even bare ``Exception``). Callers of this package
only ever see :class:`~app.vadp.errors.VCenterError`, whose kind tells the UI what went
wrong and whose message tells the operator what to do. The password is never part of a
message or a log line.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyVim.connect
from pyVmomi import vim, vmodl

from app.vadp.address import SdkAddress, ssl_context
from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.types import AboutInfo, VCenterEndpoint

log = logging.getLogger(__name__)

_pyvim: Any = pyVim.connect  # partly annotated library; only used through the typed functions here

_VERSIONS_DOCUMENT = "/vimServiceVersions.xml"
_UNAVAILABLE_STATUSES = {502, 503, 504}
_MIN_SCRUBBED_LENGTH = 4


def scrub(message: str, secret: str) -> str:
    """Remove ``secret`` from ``message``; the last line of defence for the password.

    Messages are built so as never to contain the password; this only catches text that a
    server or library echoed back. Secrets of fewer than four characters are left alone:
    replacing every "p" would garble the message while protecting nothing.
    """
    return message.replace(secret, "***") if len(secret) >= _MIN_SCRUBBED_LENGTH else message


def classify(exc: BaseException, endpoint: VCenterEndpoint, *, connecting: bool) -> VCenterError:
    """Map any exception raised while talking to ``endpoint`` to a :class:`VCenterError`."""
    error = exc if isinstance(exc, VCenterError) else _classify(exc, endpoint, connecting)
    message = scrub(error.message, endpoint.password)
    return error if message == error.message else VCenterError(error.kind, message)


def _classify(exc: BaseException, endpoint: VCenterEndpoint, connecting: bool) -> VCenterError:
    where = SdkAddress.parse(endpoint.url).display
    kind = VCenterErrorKind
    if isinstance(exc, vim.fault.InvalidLogin):
        return VCenterError(
            kind.AUTH_FAILED,
            f"the vCenter at {where} rejected the user name or password of {endpoint.username!r}; "
            "check the credentials (and that the account is not locked)",
        )
    if isinstance(exc, vmodl.MethodFault):
        fault = type(exc).__name__
        detail = getattr(exc, "msg", None) or fault
        return VCenterError(kind.API_ERROR, f"the vCenter at {where} answered {fault}: {detail}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return VCenterError(
            kind.TLS_UNTRUSTED,
            f"the certificate of {where} is not trusted ({exc.verify_message or exc.reason}); "
            "install a trusted certificate or register the vCenter with verify_tls=false",
        )
    if isinstance(exc, TimeoutError):
        return VCenterError(
            kind.TIMEOUT,
            f"{where} did not answer within {endpoint.timeout_s:g} s; "
            "check that the vCenter is up and the network path to it, or raise the timeout",
        )
    if isinstance(exc, ssl.SSLError):
        return VCenterError(
            kind.UNREACHABLE,
            f"the TLS handshake with {where} failed ({exc.reason or exc}); "
            "check that the URL's scheme (https/http) and port are right",
        )
    if isinstance(exc, socket.gaierror):
        return VCenterError(
            kind.UNREACHABLE,
            f"could not connect to {where}: the host name does not resolve ({exc.strerror}); check the URL",
        )
    if isinstance(exc, OSError):
        verb = "could not connect to" if connecting else "lost the connection to"
        return VCenterError(kind.UNREACHABLE, f"{verb} {where}: {exc.strerror or exc}")
    if isinstance(exc, http.client.HTTPException) or "not a VIM server" in str(exc):
        return VCenterError(
            kind.NOT_A_VCENTER,
            f"{where} does not speak the vSphere SDK protocol ({type(exc).__name__}: {exc}); check the URL",
        )
    return VCenterError(
        kind.API_ERROR, f"talking to the vCenter at {where} failed: {type(exc).__name__}: {exc}"
    )


def probe_sdk(address: SdkAddress, context: ssl.SSLContext, timeout_s: float) -> None:
    """Check that ``address`` serves a vSphere SDK before handing it to pyVmomi.

    ``SmartConnect`` fetches this same document to pick an API version, but without any
    timeout, and answers a web server that is not a vCenter with a bare ``Exception``. Doing
    it here first bounds the wait and gives a precise reason.
    """
    connection: http.client.HTTPConnection
    if address.scheme == "https":
        connection = http.client.HTTPSConnection(
            address.host, address.port, timeout=timeout_s, context=context
        )
    else:
        connection = http.client.HTTPConnection(address.host, address.port, timeout=timeout_s)
    document = address.path + _VERSIONS_DOCUMENT
    try:
        connection.request("GET", document)
        response = connection.getresponse()
        body = response.read(1 << 20)
    finally:
        connection.close()
    if response.status == 200 and b"<namespaces" in body:  # vimServiceVersions.xml's root
        return
    if response.status in _UNAVAILABLE_STATUSES:
        raise VCenterError(
            VCenterErrorKind.UNREACHABLE,
            f"{address.display} answered HTTP {response.status} {response.reason}; "
            "the vSphere services may be starting or stopped, try again later",
        )
    hint = ""
    if address.scheme == "http" and b"HTTPS" in body:
        hint = " (the server wants https; use an https:// URL)"
    raise VCenterError(
        VCenterErrorKind.NOT_A_VCENTER,
        f"{address.display} is not a vCenter: it answered HTTP {response.status} {response.reason} "
        f"for {document}{hint}; check the URL (e.g. https://vc.example.com)",
    )


@contextmanager
def connect(endpoint: VCenterEndpoint) -> Iterator[Any]:
    """Log in to ``endpoint`` and yield its ``vim.ServiceInstance``; always log out after.

    Network and API failures inside the ``with`` block are classified too, so a caller that
    reads properties never has to know pyVmomi's exception types.
    """
    address = SdkAddress.parse(endpoint.url)
    context = ssl_context(endpoint.verify_tls)
    log.debug("connecting to vCenter %s as %s", address.sdk_url, endpoint.username)
    try:
        probe_sdk(address, context, endpoint.timeout_s)
        service_instance = _pyvim.SmartConnect(
            protocol=address.scheme,
            host=address.host,
            port=address.port,
            path=address.path,
            user=endpoint.username,
            pwd=endpoint.password,
            sslContext=context,
            httpConnectionTimeout=endpoint.timeout_s,
        )
    except Exception as exc:
        error = classify(exc, endpoint, connecting=True)
        log.info("connecting to vCenter %s failed: %s", address.display, error.message)
        raise error from exc
    try:
        yield service_instance
    except (OSError, http.client.HTTPException, vmodl.MethodFault) as exc:
        raise classify(exc, endpoint, connecting=False) from exc
    finally:
        _disconnect(service_instance, address)


def _disconnect(service_instance: Any, address: SdkAddress) -> None:
    """Log out; a failure here must not hide the result (or error) of the real work."""
    try:
        _pyvim.Disconnect(service_instance)
    except Exception as exc:
        log.debug("logging out of %s failed: %s", address.display, type(exc).__name__)


def read_about(service_instance: Any) -> AboutInfo:
    """``ServiceContent.about`` as plain data (a data object, so attribute access is safe)."""
    about = service_instance.RetrieveContent().about
    return AboutInfo(
        name=about.name or "",
        full_name=about.fullName or "",
        version=about.version or "",
        build=about.build or "",
        api_type=about.apiType or "",
        instance_uuid=about.instanceUuid or "",
    )


def test_connection(endpoint: VCenterEndpoint) -> AboutInfo:
    """Log in and out once; what the UI's "test connection" button runs."""
    with connect(endpoint) as service_instance:
        return read_about(service_instance)


async def test_connection_async(endpoint: VCenterEndpoint) -> AboutInfo:
    """:func:`test_connection` in a worker thread, since pyVmomi blocks."""
    return await asyncio.to_thread(test_connection, endpoint)


# These are not pytest tests, whatever their names say.
test_connection.__test__ = False  # type: ignore[attr-defined]
test_connection_async.__test__ = False  # type: ignore[attr-defined]
