"""File names as text the API can carry, and back.

Filesystems hold names as bytes; ext and XFS names need not be UTF-8 (old Latin-1 names, say).
The parsers decode them with ``surrogateescape``, so a byte that is not UTF-8 becomes a lone
surrogate (U+DC80-U+DCFF): exact for looking the file up again, but no JSON document, header or
database column can hold it. At the API's edge a name is therefore *shown*: each such byte as
``\\xNN`` and a backslash as ``\\\\``; a path the API receives is *unshown* back. Names that are
valid UTF-8 and have no backslash look the same either way.
"""

from __future__ import annotations

import re

_SHOWN = re.compile(r"[\\\udc80-\udcff]")
_UNSHOWN = re.compile(r"\\(\\|x[89a-fA-F][0-9a-fA-F])")


def _show(match: re.Match[str]) -> str:
    char = match.group(0)
    return "\\\\" if char == "\\" else f"\\x{ord(char) - 0xDC00:02x}"


def _unshow(match: re.Match[str]) -> str:
    escape = match.group(1)
    return "\\" if escape == "\\" else chr(0xDC00 + int(escape[1:], 16))


def shown(name: str) -> str:
    """``name`` (or a path) as the API shows it: always valid Unicode, and reversible."""
    return _SHOWN.sub(_show, name)


def unshown(text: str) -> str:
    """A name or path the API received, as the filesystem holds it. A backslash that starts no
    escape stays itself, so a typed name with a lone backslash still finds its file."""
    return _UNSHOWN.sub(_unshow, text)


def printable(text: str) -> str:
    """A message that may quote names, with only the undecodable bytes escaped (for reading)."""
    return re.sub(r"[\udc80-\udcff]", lambda m: f"\\x{ord(m.group(0)) - 0xDC00:02x}", text)
