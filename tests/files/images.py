"""Filesystem images for the file-browsing tests, built with the real tools and never mounted.

* ext2/3/4: ``mke2fs -d`` populates from a directory; owners are set with ``debugfs`` (so the tests need
  no root for them), modes and modification times come from the source files.
* XFS: ``mkfs.xfs -p protofile`` (names without spaces; times are the build time). 300 MiB, the smallest
  mkfs.xfs makes, but sparse.
* FAT12/16/32: ``mkfs.fat``, then ``mcopy -s -m`` (mtools keeps modification times; it cannot write
  names outside Unicode's basic plane, so the FAT tree has none).
* NTFS: ``mkntfs``, then libntfs-3g (the library of ntfs-3g) through ctypes: ntfs-3g's command line tools
  can copy a file into an image but cannot make directories or reparse points without mounting. Zero
  blocks are not written, so ntfs-3g makes the file sparse (holes, and a valid data length short of
  the file size).
Partition tables and LVM2 are in ``disks.py``. A missing tool fails the test with the Debian package to
install, never skips it.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import struct
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.files.models import EntryType

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
MTIME = 1614834367  # 2021-03-04 05:06:07 UTC: the modification time of every source file
SECTOR = 512

TOOLS = {
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "mkntfs": "ntfs-3g",
    "ntfsinfo": "ntfs-3g",
    "mshowfat": "mtools",
    "sfdisk": "fdisk",
    "mkswap": "util-linux",
    "losetup": "mount",
    "lvm": "lvm2",
    "dd": "coreutils",
}


def require(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{tool} is not installed: install the Debian package '{TOOLS[tool]}'")
    return path


def run(
    args: Sequence[str | os.PathLike[str]], *, stdin: str | None = None, env: dict[str, str] | None = None
) -> str:
    argv = [require(str(args[0])), *map(str, args[1:])]
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


# -- the files put on every filesystem -------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One thing in a test tree. ``path`` is absolute; directories are listed before their contents."""

    path: str
    kind: EntryType
    data: bytes = b""
    target: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]


def sparse_bytes(size: int, pieces: Iterable[tuple[int, int]], seed: int) -> bytes:
    """``size`` bytes, zero except random data at each ``(offset, length)``."""
    rng = random.Random(seed)
    data = bytearray(size)
    for offset, length in pieces:
        data[offset : offset + length] = rng.randbytes(length)
    return bytes(data)


def tree(*, posix: bool, big: bool = True, astral: bool = True, spaces: bool = True) -> list[Item]:
    """The test tree: ``posix`` adds symbolic links, modes and owners; the flags drop what a tool cannot
    write (``big``: the 6 MiB sparse file, ``astral``: names outside the basic plane, ``spaces``)."""
    rng = random.Random(7)
    d, f, link = EntryType.DIR, EntryType.FILE, EntryType.SYMLINK
    items = [
        Item("/hello.txt", f, b"Hello, world!\n"),
        Item("/data", d, mode=0o755),
        Item("/data/random.bin", f, rng.randbytes(300_001)),
        Item("/data/empty.txt", f, b""),
        Item("/nested", d, mode=0o755),
        Item("/nested/a", d, mode=0o755),
        Item("/nested/a/b", d, mode=0o755),
        Item("/nested/a/b/c", d, mode=0o755),
        Item("/nested/a/b/c/deep.txt", f, b"deep down\n"),
        Item("/Grüße", d, mode=0o755),
        Item("/Grüße/日本語.txt", f, "こんにちは\n".encode()),
        Item("/lower.txt", f, b"lower\n"),
        Item("/UPPER.TXT", f, b"UPPER\n"),
        Item("/many", d, mode=0o755),
        *(Item(f"/many/file-{i:03}.txt", f, f"{i}\n".encode()) for i in range(150)),
    ]
    if big:
        size = 6 * MiB + 12345
        pieces = [(0, 70 * KiB), (2 * MiB + 3 * 4096 + 17, 100 * KiB), (size - MiB - 5, MiB + 5)]
        items.append(Item("/data/sparse.bin", f, sparse_bytes(size, pieces, seed=11)))
        # ends in zeros: a hole at the end (ext, XFS), data beyond the valid data length (NTFS)
        items.append(Item("/data/tail.bin", f, sparse_bytes(MiB + 3, [(0, 100 * KiB)], seed=12)))
    if astral:
        items.append(Item("/émoji😀.txt", f, "😀\n".encode()))
    if spaces:
        items.append(Item("/Read Me.txt", f, b"with spaces\n"))
    if posix:
        items += [
            Item("/perm", d, mode=0o755),
            Item("/perm/script.sh", f, b"#!/bin/sh\necho hi\n", mode=0o755),
            Item("/perm/secret", f, b"top secret\n", mode=0o600, uid=1000, gid=1000),
            Item("/perm/setuid", f, b"\x7fELF", mode=0o4755, uid=0, gid=50),
            Item("/links", d, mode=0o755),
            Item("/links/to-hello", link, target="../hello.txt", mode=0o777),
            Item("/links/dangling", link, target="/does/not/exist", mode=0o777),
            Item("/links/long", link, target="../" + "long-target-" * 8, mode=0o777),
            Item("/links/dirlink", link, target="../nested", mode=0o777),
        ]
    return sorted(items, key=lambda item: item.path.split("/"))


def write_tree(items: Sequence[Item], root: Path) -> Path:
    """Materialise ``items`` under ``root`` (files sparse where zero), times set to ``MTIME``."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for item in items:
        path = root / item.path.lstrip("/")
        if item.kind is EntryType.DIR:
            path.mkdir()
            path.chmod(item.mode)
        elif item.kind is EntryType.SYMLINK:
            path.symlink_to(item.target)
        else:
            with open(path, "wb") as out:
                for at in range(0, len(item.data), 64 * KiB):
                    block = item.data[at : at + 64 * KiB]
                    if block.count(0) != len(block):
                        out.seek(at)
                        out.write(block)
                out.truncate(len(item.data))
            path.chmod(item.mode)
    for item in reversed(
        items
    ):  # contents first, so that writing them does not change their directory's time
        os.utime(root / item.path.lstrip("/"), (MTIME, MTIME), follow_symlinks=False)
    return root


def truncate(path: Path, size: int) -> Path:
    path.unlink(missing_ok=True)
    with open(path, "wb") as out:
        out.truncate(size)
    return path


# -- filesystems -----------------------------------------------------------------------------------


def ext_image(kind: str, items: Sequence[Item], work: Path, size: int = 32 * MiB) -> Path:
    src = write_tree(items, work / f"src-{kind}")
    image = truncate(work / f"{kind}.img", size)
    run(["mke2fs", "-q", "-F", "-t", kind, "-L", f"{kind}-label", "-d", src, image])
    commands = [f'sif "{item.path}" uid {item.uid}\nsif "{item.path}" gid {item.gid}' for item in items]
    script = work / f"{kind}.debugfs"
    script.write_text("\n".join(commands) + "\n")
    run(["debugfs", "-w", "-f", script, image])
    return image


def xfs_image(items: Sequence[Item], work: Path) -> Path:
    src = write_tree(items, work / "src-xfs")
    lines = ["/dev/null", "0 0", "d--755 0 0"]
    depth = [""]
    for item in items:
        parent = item.path.rsplit("/", 1)[0]
        while depth[-1] != parent:
            depth.pop()
            lines.append("$")
        special = ("u" if item.mode & 0o4000 else "-") + ("g" if item.mode & 0o2000 else "-")
        perms = f"{item.mode & 0o777:03o}"
        if item.kind is EntryType.DIR:
            lines.append(f"{item.name} d{special}{perms} {item.uid} {item.gid}")
            depth.append(item.path)
        elif item.kind is EntryType.SYMLINK:
            lines.append(f"{item.name} l{special}{perms} {item.uid} {item.gid} {item.target}")
        else:
            lines.append(f"{item.name} -{special}{perms} {item.uid} {item.gid} {src / item.path.lstrip('/')}")
    lines += ["$"] * len(depth)
    proto = work / "xfs.proto"
    proto.write_text("\n".join(lines) + "\n")
    image = truncate(work / "xfs.img", 300 * MiB)
    run(["mkfs.xfs", "-q", "-f", "-L", "xfs-label", "-p", proto, image])
    return image


def fat_image(bits: int, items: Sequence[Item], work: Path, size: int) -> Path:
    src = write_tree(items, work / f"src-fat{bits}")
    image = truncate(work / f"fat{bits}.img", size)
    options = ["-s", "1"] if bits == 32 else []
    run(["mkfs.fat", "-F", str(bits), *options, "-n", f"FAT{bits}VOL", image])
    top = sorted(src.iterdir())
    env = {"LC_ALL": "C.UTF-8", "TZ": "UTC", "MTOOLS_SKIP_CHECK": "1"}
    run(["mcopy", "-s", "-m", "-i", image, *top, "::/"], env=env)
    return image


class _Ntfs3g:
    """The few calls of libntfs-3g needed to populate an unmounted NTFS image."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libntfs-3g.so.89", use_errno=True)
        except OSError:
            pytest.fail("libntfs-3g is not installed: install the Debian package 'ntfs-3g'")
        p, u32 = ctypes.c_void_p, ctypes.c_uint32
        self.lib = lib
        self.mount = self._fn("ntfs_mount", p, ctypes.c_char_p, ctypes.c_ulong)
        self.umount = self._fn("ntfs_umount", ctypes.c_int, p, ctypes.c_int)
        self.inode = self._fn("ntfs_pathname_to_inode", p, p, p, ctypes.c_char_p)
        self.to_unicode = self._fn("ntfs_mbstoucs", ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(p))
        self.create = self._fn("ntfs_create", p, p, u32, p, ctypes.c_uint8, u32)
        self.close = self._fn("ntfs_inode_close", ctypes.c_int, p)
        self.attr_open = self._fn("ntfs_attr_open", p, p, u32, p, u32)
        self.attr_pwrite = self._fn(
            "ntfs_attr_pwrite", ctypes.c_int64, p, ctypes.c_int64, ctypes.c_int64, ctypes.c_char_p
        )
        self.attr_close = self._fn("ntfs_attr_close", None, p)
        self.attr_truncate = self._fn("ntfs_attr_truncate", ctypes.c_int, p, ctypes.c_int64)
        self.set_reparse = self._fn(
            "ntfs_set_ntfs_reparse_data", ctypes.c_int, p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int
        )
        self.unnamed = ctypes.addressof(ctypes.c_uint16.in_dll(lib, "AT_UNNAMED"))

    def _fn(self, name: str, result: object, *args: object) -> ctypes._CFuncPtr:  # type: ignore[name-defined]
        function = getattr(self.lib, name)
        function.restype = result
        function.argtypes = list(args)
        return function


ADMINISTRATORS_SECURITY_ID = 0x100  # mkntfs's first security descriptor: owner S-1-5-32-544 (Administrators)


def ntfs_image(items: Sequence[Item], work: Path, size: int = 32 * MiB) -> Path:
    image = truncate(work / "ntfs.img", size)
    run(["mkntfs", "-q", "-F", "-Q", "-L", "ntfs-label", image])
    ntfs = _Ntfs3g()
    volume = ntfs.mount(str(image).encode(), 0)
    assert volume, f"ntfs_mount failed: errno {ctypes.get_errno()}"
    try:
        for item in items:
            parent_path, _, name = item.path.rpartition("/")
            parent = ntfs.inode(volume, None, (parent_path or "/").encode())
            assert parent, f"no directory {parent_path}"
            unicode_name = ctypes.c_void_p()
            length = ntfs.to_unicode(name.encode(), ctypes.byref(unicode_name))
            mode = 0o040000 if item.kind is EntryType.DIR else 0o100000
            inode = ntfs.create(parent, ADMINISTRATORS_SECURITY_ID, unicode_name, length, mode)
            assert inode, f"ntfs_create {item.path}: errno {ctypes.get_errno()}"
            # The directory first: closing a file updates its entry in the directory, which must not be
            # open twice at that moment.
            ntfs.close(parent)
            if item.kind is EntryType.FILE and item.data:
                attr = ntfs.attr_open(inode, 0x80, ntfs.unnamed, 0)  # the unnamed $DATA
                for at in range(0, len(item.data), 64 * KiB):  # zero blocks left out: ntfs-3g makes holes
                    block = item.data[at : at + 64 * KiB]
                    if block.count(0) != len(block):
                        assert ntfs.attr_pwrite(attr, at, len(block), block) == len(block)
                assert ntfs.attr_truncate(attr, len(item.data)) == 0
                ntfs.attr_close(attr)
            elif item.kind is EntryType.SYMLINK:
                reparse = symlink_reparse_data(item.target)
                assert ntfs.set_reparse(inode, reparse, len(reparse), 0) == 0, item.path
            ntfs.close(inode)
    finally:
        assert ntfs.umount(volume, 0) == 0
    return image


def symlink_reparse_data(target: str) -> bytes:
    """A Windows symbolic link's reparse point (IO_REPARSE_TAG_SYMLINK), relative when ``target`` is."""
    name = target.replace("/", "\\").encode("utf-16-le")
    relative = 0 if target.startswith("/") else 1
    body = struct.pack("<HHHHI", 0, len(name), len(name), len(name), relative) + name + name
    return struct.pack("<IHH", 0xA000000C, len(body), 0) + body


def swap_image(work: Path, size: int = 8 * MiB) -> Path:
    image = truncate(work / "swap.img", size)
    run(["mkswap", "-L", "swap-label", image])
    return image
