"""Headers of file downloads."""

from __future__ import annotations

from urllib.parse import quote

from app.files.names import printable


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the exact name (RFC 6266 / RFC 5987); a byte of
    the name that is not UTF-8 is written as \\xNN (``app.files.names``)."""
    filename = printable(filename)
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in filename)
    return f"attachment; filename=\"{fallback or 'download'}\"; filename*=UTF-8''{quote(filename, safe='')}"
