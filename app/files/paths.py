"""Paths inside a filesystem: POSIX style, always absolute, checked before anything is read.

``normalize`` turns what a user typed into the one spelling the rest of the package uses: ``/`` for the
root, otherwise ``/a/b`` (duplicate and trailing slashes dropped, ``.`` removed, ``..`` applied). It is
purely lexical, which is exact here because symbolic links are never followed. A relative path is taken
from the root, since there is no current directory. Backslashes are ordinary characters (they are legal
in ext and XFS names), so Windows-style paths are not translated.

Limits: a path of more than 4096 bytes (Linux's PATH_MAX) and a name of more than 255 units (255 UTF-8
bytes is Linux's NAME_MAX, 255 UTF-16 code units the NTFS and FAT limit; a name is refused only when it
is too long in both) cannot exist on any filesystem read here, so they are refused up front rather than
searched for.
"""

from __future__ import annotations

from app.files.errors import InvalidPath

MAX_PATH_BYTES = 4096
MAX_NAME_UNITS = 255


def _utf8_length(text: str) -> int:
    # surrogatepass: names read with surrogateescape (bytes that are not UTF-8) still have a length
    return len(text.encode("utf-8", "surrogatepass"))


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def split(path: str) -> tuple[str, ...]:
    """The names along a path, root first (``()`` for the root), after checking and normalising it."""
    if not isinstance(path, str):
        raise InvalidPath(f"a path must be text, not {type(path).__name__}")
    if "\x00" in path:
        raise InvalidPath("the path contains a NUL character, which no file name can contain")
    if _utf8_length(path) > MAX_PATH_BYTES:
        raise InvalidPath(f"the path is longer than {MAX_PATH_BYTES} bytes; no filesystem allows such paths")
    names: list[str] = []
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not names:
                raise InvalidPath(f"'{path}' goes above the root directory with '..'")
            names.pop()
            continue
        if _utf8_length(name) > MAX_NAME_UNITS and _utf16_units(name) > MAX_NAME_UNITS:
            raise InvalidPath(f"the name '{name[:40]}…' is longer than {MAX_NAME_UNITS} characters")
        names.append(name)
    return tuple(names)


def join(names: tuple[str, ...] | list[str]) -> str:
    """The absolute path of a sequence of names."""
    return "/" + "/".join(names)


def normalize(path: str) -> str:
    """The canonical spelling of ``path`` (see the module docstring); raises ``InvalidPath``."""
    return join(split(path))


def child(parent: str, name: str) -> str:
    """The path of ``name`` inside the directory ``parent`` (both already normalised)."""
    return f"/{name}" if parent == "/" else f"{parent}/{name}"
