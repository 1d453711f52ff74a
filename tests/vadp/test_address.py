"""Parsing registered vCenter URLs, TLS contexts and password scrubbing (no simulator)."""

from __future__ import annotations

import ssl

import pytest

from app.vadp.address import SdkAddress, ssl_context
from app.vadp.connection import scrub
from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.types import VCenterEndpoint


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://vc.example.com", SdkAddress("https", "vc.example.com", 443, "/sdk")),
        ("https://vc.example.com/", SdkAddress("https", "vc.example.com", 443, "/sdk")),
        ("HTTPS://VC.example.com:8443", SdkAddress("https", "vc.example.com", 8443, "/sdk")),
        ("http://127.0.0.1:8989/sdk", SdkAddress("http", "127.0.0.1", 8989, "/sdk")),
        ("http://vc", SdkAddress("http", "vc", 80, "/sdk")),
        ("https://admin:hunter22@vc.example.com/sdk/", SdkAddress("https", "vc.example.com", 443, "/sdk")),
        ("https://[fd00::5]:444/custom", SdkAddress("https", "fd00::5", 444, "/custom")),
    ],
)
def test_parse(url: str, expected: SdkAddress) -> None:
    assert SdkAddress.parse(url) == expected


def test_derived_urls_have_no_credentials() -> None:
    address = SdkAddress.parse("https://admin:hunter22@[fd00::5]:444")
    assert address.display == "[fd00::5]:444"
    assert address.sdk_url == "https://[fd00::5]:444/sdk"
    assert address.rest_url == "https://[fd00::5]:444/rest"


@pytest.mark.parametrize("url", ["ftp://vc.example.com", "vc.example.com", "https://", "https://vc:99999"])
def test_unusable_urls(url: str) -> None:
    with pytest.raises(VCenterError) as caught:
        SdkAddress.parse(url)
    assert caught.value.kind is VCenterErrorKind.NOT_A_VCENTER


def test_ssl_context_verifies_unless_told_not_to() -> None:
    strict, lax = ssl_context(True), ssl_context(False)
    assert (strict.verify_mode, strict.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert (lax.verify_mode, lax.check_hostname) == (ssl.CERT_NONE, False)


def test_scrub() -> None:
    assert scrub("server said: bad password s3cr3t-pw", "s3cr3t-pw") == "server said: bad password ***"
    assert scrub("http://x", "p") == "http://x"  # too short to scrub meaningfully
    assert scrub("anything", "") == "anything"


def test_endpoint_repr_hides_the_password() -> None:
    endpoint = VCenterEndpoint("https://vc", "admin", "hunter22")
    assert "hunter22" not in repr(endpoint)
