"""Connecting to a vCenter: success, and every class of failure with its actionable message."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pyVmomi import vim

from app.vadp import connection
from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.types import VCenterEndpoint
from tests.support.vcsim import VcsimServer
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp import reference
from tests.vadp.reference import closed_port, props

pytestmark = pytest.mark.vcsim

GOOD_PASSWORD = "correct-horse-battery-staple"
WRONG_PASSWORD = "Tr0ub4dor&3-not-it"


def failure(endpoint: VCenterEndpoint) -> VCenterError:
    with pytest.raises(VCenterError) as caught:
        connection.test_connection(endpoint)
    return caught.value


def _handler(status: int) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>just a web site</body></html>"
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def web_server(status: int) -> Iterator[str]:
    """A web server that answers ``status`` and an HTML page to everything: not a vCenter."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(status))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_connection_returns_about(vcsim: VcsimServer) -> None:
    about = connection.test_connection(reference.endpoint(vcsim))
    with reference.session(vcsim) as si:
        expected = si.RetrieveContent().about
    assert about.api_type == "VirtualCenter" == expected.apiType
    assert about.instance_uuid == expected.instanceUuid != ""
    assert (about.name, about.full_name, about.version, about.build) == (
        expected.name,
        expected.fullName,
        expected.version,
        expected.build,
    )


async def test_connection_async(vcsim: VcsimServer) -> None:
    about = await connection.test_connection_async(reference.endpoint(vcsim))
    assert about.api_type == "VirtualCenter"


def test_credentials_in_the_url_are_ignored(vcsim: VcsimServer) -> None:
    url = vcsim.url.replace("://", "://intruder:url-secret@")
    endpoint = reference.endpoint(vcsim, url=url)
    with connection.connect(endpoint) as si:
        session = props(si, si.RetrieveContent().sessionManager, "currentSession")["currentSession"]
    assert session.userName == vcsim.username


def test_logs_out_after_the_block(vcsim: VcsimServer) -> None:
    with connection.connect(reference.endpoint(vcsim)) as si:
        manager = si.RetrieveContent().sessionManager
        assert props(si, manager, "currentSession").get("currentSession") is not None
    # The simulator answers property reads without a session; there is none any more.
    assert props(si, manager, "currentSession").get("currentSession") is None


def test_api_fault_inside_the_block_is_classified(vcsim: VcsimServer) -> None:
    with pytest.raises(VCenterError) as caught, connection.connect(reference.endpoint(vcsim)) as si:
        props(si, vim.VirtualMachine("vm-does-not-exist", si._stub), "name")
    assert caught.value.kind is VCenterErrorKind.API_ERROR
    assert "ManagedObjectNotFound" in caught.value.message


def test_unreachable_port() -> None:
    port = closed_port()
    error = failure(VCenterEndpoint(f"http://127.0.0.1:{port}/sdk", "u", "p"))
    assert error.kind is VCenterErrorKind.UNREACHABLE
    assert error.message.startswith(f"could not connect to 127.0.0.1:{port}: ")
    assert "refused" in error.message.lower()


def test_unresolvable_host_name() -> None:
    error = failure(VCenterEndpoint("https://vcenter.invalid", "u", "p", timeout_s=5))
    assert error.kind is VCenterErrorKind.UNREACHABLE
    assert "vcenter.invalid:443" in error.message
    assert "does not resolve" in error.message


def test_timeout_when_the_server_never_answers() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        error = failure(VCenterEndpoint(f"http://127.0.0.1:{port}", "u", "p", timeout_s=0.5))
    assert error.kind is VCenterErrorKind.TIMEOUT
    assert f"127.0.0.1:{port} did not answer within 0.5 s" in error.message


def test_untrusted_certificate(vcsim_tls: VcsimServer) -> None:
    error = failure(reference.endpoint(vcsim_tls, verify_tls=True))
    assert error.kind is VCenterErrorKind.TLS_UNTRUSTED
    assert f"the certificate of 127.0.0.1:{vcsim_tls.port} is not trusted" in error.message
    assert "verify_tls=false" in error.message


def test_untrusted_certificate_accepted_without_verification(vcsim_tls: VcsimServer) -> None:
    about = connection.test_connection(reference.endpoint(vcsim_tls, verify_tls=False))
    assert about.api_type == "VirtualCenter"


def test_http_url_for_an_https_server(vcsim_tls: VcsimServer) -> None:
    error = failure(reference.endpoint(vcsim_tls, url=vcsim_tls.url.replace("https://", "http://")))
    assert error.kind is VCenterErrorKind.NOT_A_VCENTER
    assert "use an https:// URL" in error.message


def test_https_url_for_an_http_server(vcsim: VcsimServer) -> None:
    error = failure(reference.endpoint(vcsim, url=vcsim.url.replace("http://", "https://")))
    assert error.kind is VCenterErrorKind.UNREACHABLE
    assert "TLS handshake" in error.message
    assert "scheme" in error.message


@pytest.mark.parametrize("status", [404, 200])
def test_not_a_vcenter(status: int) -> None:
    with web_server(status) as url:
        error = failure(VCenterEndpoint(url, "u", "p"))
    assert error.kind is VCenterErrorKind.NOT_A_VCENTER
    assert f"is not a vCenter: it answered HTTP {status}" in error.message
    assert "/sdk/vimServiceVersions.xml" in error.message


def test_unavailable_service_is_reported_as_unreachable() -> None:
    with web_server(503) as url:
        error = failure(VCenterEndpoint(url, "u", "p"))
    assert error.kind is VCenterErrorKind.UNREACHABLE
    assert "HTTP 503" in error.message
    assert "try again later" in error.message


def test_invalid_url() -> None:
    error = failure(VCenterEndpoint("ftp://vc.example.com", "u", "p"))
    assert error.kind is VCenterErrorKind.NOT_A_VCENTER
    assert "https://vc.example.com" in error.message


def test_wrong_password(vcsim_factory: VcsimFactory, caplog: pytest.LogCaptureFixture) -> None:
    server = vcsim_factory(extra_args=["-username", "backup-svc", "-password", GOOD_PASSWORD])
    caplog.set_level("DEBUG")
    error = failure(reference.endpoint(server, username="backup-svc", password=WRONG_PASSWORD))
    assert error.kind is VCenterErrorKind.AUTH_FAILED
    assert "'backup-svc'" in error.message
    assert "check the credentials" in error.message
    for text in (error.message, str(error), repr(error), caplog.text):
        assert WRONG_PASSWORD not in text
        assert GOOD_PASSWORD not in text
    # Enforcement is real: the right password works, any other user does not.
    assert connection.test_connection(reference.endpoint(server)).api_type == "VirtualCenter"
    other_user = failure(reference.endpoint(server, username="someone-else"))
    assert other_user.kind is VCenterErrorKind.AUTH_FAILED
