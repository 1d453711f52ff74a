from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.schemas import OutputModel


class VolumeRead(OutputModel):
    id: str = Field(description="Pass as 'partition' to the file endpoints: '1', '5', 'lvm:vg0/root'")
    partition: int | None
    scheme: str = Field(description="gpt, mbr, none (whole disk), lvm ...")
    offset: int | None
    size: int
    filesystem: str = Field(description="ext2/3/4, xfs, ntfs, fat12/16/32, lvm2, swap or unknown")
    browsable: bool
    label: str | None = None
    type_name: str | None = None
    name: str | None = None
    problem: str | None = Field(default=None, description="Why it cannot be browsed, when it cannot.")


class DiskVolumes(OutputModel):
    disk: int = Field(description="Disk key: pass as 'disk' to the file endpoints")
    label: str
    size: int
    volumes: list[VolumeRead]
    error: str | None = Field(default=None, description="Why the disk's volumes could not be read.")


class FileEntry(OutputModel):
    path: str
    name: str
    type: str = Field(description="file, dir, symlink or other")
    size: int
    mtime: datetime | None
    mode: int | None = Field(default=None, description="Permission bits (ext, XFS)")
    uid: int | None = None
    gid: int | None = None
    owner: str | None = Field(default=None, description="Owner SID (NTFS)")
    attributes: int | None = Field(default=None, description="Windows attribute bits (NTFS, FAT)")
    symlink_target: str | None = None


class FileListing(OutputModel):
    disk: int
    partition: str
    path: str
    items: list[FileEntry]
    total: int = Field(description="Entries in the directory")
    next_cursor: str | None = Field(description="Pass as 'cursor' for the next page; null on the last page")
