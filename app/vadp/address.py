"""Where a vCenter's SDK lives, parsed once from the URL the operator registered.

Operators type ``https://vc.example.com`` as often as ``http://127.0.0.1:8989/sdk``; both the
SOAP client (which wants protocol, host, port and path separately) and the vAPI REST client
(which wants ``.../rest``) are derived from the same parsed address so that they can never
disagree about which server they talk to. Credentials embedded in the URL are dropped: the
endpoint's own username/password are the only ones used, and a URL with a password in it
must never end up in a message.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.vadp.errors import VCenterError, VCenterErrorKind

_DEFAULT_PORTS = {"https": 443, "http": 80}
_DEFAULT_PATH = "/sdk"


@dataclass(frozen=True)
class SdkAddress:
    """Scheme, host, port and SDK path of a vCenter, without any userinfo."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> SdkAddress:
        """Parse a registered vCenter URL; an unusable one is reported as ``not_a_vcenter``."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise VCenterError(
                VCenterErrorKind.NOT_A_VCENTER, f"the vCenter URL is not valid ({exc})"
            ) from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise VCenterError(
                VCenterErrorKind.NOT_A_VCENTER,
                "the vCenter URL must look like https://vc.example.com "
                f"(got scheme {scheme or 'none'!r} and host {parts.hostname or 'none'!r})",
            )
        path = parts.path.rstrip("/") or _DEFAULT_PATH
        return cls(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], path)

    @property
    def display(self) -> str:
        """``host:port`` as shown to users (IPv6 literals bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def sdk_url(self) -> str:
        return f"{self.scheme}://{self.display}{self.path}"

    @property
    def rest_url(self) -> str:
        """The vAPI REST base: same server, path ``/rest``."""
        return f"{self.scheme}://{self.display}/rest"


def ssl_context(verify_tls: bool) -> ssl.SSLContext:
    """An explicit TLS context for both clients.

    Always explicit, because pyVmomi silently disables verification for ``localhost`` /
    ``127.0.0.1`` when it is given no context, which would make ``verify_tls=True`` a lie.
    """
    context = ssl.create_default_context()
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
