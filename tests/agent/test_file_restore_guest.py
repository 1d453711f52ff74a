"""File restore into the running VM (delivery 'guest'), with a fake of the guest-file calls.

vcsim implements vCenter guest operations only for VMs backed by Docker containers, and no Docker
engine runs here, so ``FakeGuestFiles`` stands in for ``app.vadp.guest_files.VimGuestFiles`` (the one
part that talks to VMware Tools): it writes into a directory as the guest would. Everything else is
real: an ext4 image made by mke2fs, backed up into a real repository, read back through app.files.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.agent.repositories import RepositoryCache
from app.agent.runners.file_restore import FileRestoreRunner, GuestSession
from app.agent.runtime import JobRuntime
from app.chunkstore import ExportNotFound, FileReader, Repository, backup_disk
from app.contracts.agent import (
    FileRestoreParams,
    FileSelection,
    GuestDelivery,
    JobAssignment,
    RepositoryAccess,
    VmRef,
)
from app.vadp.errors import VCenterError, VCenterErrorKind
from tests.chunkstore.conftest import new_repo
from tests.files.images import ext_image, tree

MIB = 1 << 20


class FakeGuestFiles:
    """A fake of the guest operations (named as such: see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple[str, str]] = []

    def _local(self, path: str) -> Path:
        assert path.startswith("/"), path
        return self.root / path.lstrip("/")

    def make_directory(self, path: str) -> None:
        self.calls.append(("mkdir", path))
        self._local(path).mkdir(parents=True, exist_ok=True)

    def put_file(
        self, path: str, chunks: Iterable[bytes], size: int, mode: int | None, overwrite: bool
    ) -> None:
        self.calls.append(("put", path))
        local = self._local(path)
        if local.exists() and not overwrite:
            # What VimGuestFiles raises for vSphere's FileAlreadyExists fault.
            raise VCenterError(VCenterErrorKind.INVALID_STATE, f"{path} exists in the guest", transient=False)
        data = b"".join(chunks)
        assert len(data) == size
        local.write_bytes(data)
        if mode is not None:
            local.chmod(mode)


@pytest.fixture
def point(tmp_path: Path) -> tuple[Repository, str, Path]:
    items = tree(posix=True, big=False)
    image = ext_image("ext4", items, tmp_path / "img", size=16 * MIB)
    repo = new_repo(tmp_path / "repo")
    with FileReader(image) as reader:
        result = backup_disk(repo, reader, image.stat().st_size, workers=2)
    point_id = str(uuid.uuid4())
    writer = repo.begin_restore_point(point_id, vm_config={})
    writer.add_disk(key="2000", label="Hard disk 1", index=result.index)
    writer.commit()
    return repo, point_id, tmp_path / "repo"


def assignment(
    repo_root: Path, point_id: str, files: list[FileSelection], target: str | None
) -> JobAssignment:
    return JobAssignment(
        job_id=uuid.uuid4(),
        kind="file_restore",
        attempt=1,
        lease_expires_at=datetime.now(UTC),
        lease_s=60,
        vm=VmRef(id=uuid.uuid4(), instance_uuid="u", moid="vm-1", name="vm"),
        repository=RepositoryAccess(url=repo_root.as_uri()),
        file_restore=FileRestoreParams(
            restore_id=uuid.uuid4(),
            restore_point_id=uuid.UUID(point_id),
            files=files,
            delivery="guest",
            export_id="unused",
            guest=GuestDelivery(username="root", password="secret", target_directory=target),
        ),
    )


def test_files_and_directories_go_into_the_guest_links_are_reported(
    point: tuple[Repository, str, Path], tmp_path: Path
) -> None:
    _, point_id, root = point
    guest_root = tmp_path / "guest"
    fake = FakeGuestFiles(guest_root)
    closed = threading.Event()
    runner = FileRestoreRunner(RepositoryCache(), guest=lambda a: GuestSession(fake, closed.set))
    files = [
        FileSelection(disk=2000, volume="1", path="/perm"),
        FileSelection(disk=2000, volume="1", path="/links"),
    ]
    a = assignment(root, point_id, files, "/restored")

    result = runner.run(a, JobRuntime(assignment=a))
    assert result.outcome == "succeeded", result.error
    assert result.file_restore is not None and result.file_restore.files == 3
    restored = guest_root / "restored"
    assert (restored / "perm/secret").read_bytes() == b"top secret\n"
    assert (restored / "perm/secret").stat().st_mode & 0o777 == 0o600
    assert (restored / "perm/script.sh").stat().st_mode & 0o777 == 0o755
    assert (restored / "links").is_dir()
    # Guest operations cannot make symbolic links: each one is reported, none is faked as a file.
    assert len(result.file_restore.skipped) == 4 and all(
        "symbolic link" in s for s in result.file_restore.skipped
    )
    assert not (restored / "links/to-hello").exists()
    assert closed.is_set()

    # A second delivery without overwrite fails on the first existing file, and says so.
    again = runner.run(a, JobRuntime(assignment=a))
    assert again.outcome == "failed" and again.error_kind == "permanent"
    assert "exists in the guest" in (again.error or "")

    # Without a target directory each file goes back where it was.
    back = assignment(root, point_id, [FileSelection(disk=2000, volume="1", path="/hello.txt")], None)
    done = runner.run(back, JobRuntime(assignment=back))
    assert done.outcome == "succeeded", done.error
    assert (guest_root / "hello.txt").read_bytes() == b"Hello, world!\n"


def test_an_archive_goes_to_the_export_repository_when_the_point_is_read_from_another(
    point: tuple[Repository, str, Path], tmp_path: Path
) -> None:
    """Files of a point kept only offsite are read there, but the archive goes onsite, where the
    download and the expiry look for it."""
    offsite, point_id, offsite_root = point
    onsite = new_repo(tmp_path / "onsite")
    a = assignment(offsite_root, point_id, [FileSelection(disk=2000, volume="1", path="/hello.txt")], None)
    assert a.file_restore is not None
    a.file_restore.delivery = "archive"
    a.file_restore.guest = None
    a.file_restore.export_id = "restore-x-1"
    a.file_restore.export_repository = RepositoryAccess(url=(tmp_path / "onsite").as_uri())

    result = FileRestoreRunner(RepositoryCache()).run(a, JobRuntime(assignment=a))
    assert result.outcome == "succeeded", result.error
    assert onsite.read_export("restore-x-1").id == "restore-x-1"
    with pytest.raises(ExportNotFound):
        offsite.read_export("restore-x-1")


def test_a_whole_volume_goes_into_the_target_without_a_directory_for_its_root(
    point: tuple[Repository, str, Path], tmp_path: Path
) -> None:
    """The root had an entry named "root", which a real /root would then have lost to."""
    _, point_id, root = point
    fake = FakeGuestFiles(tmp_path / "guest")
    runner = FileRestoreRunner(RepositoryCache(), guest=lambda a: GuestSession(fake, lambda: None))
    a = assignment(root, point_id, [FileSelection(disk=2000, volume="1", path="/")], "/restored")
    result = runner.run(a, JobRuntime(assignment=a))
    assert result.outcome == "succeeded", result.error
    assert (tmp_path / "guest/restored/hello.txt").read_bytes() == b"Hello, world!\n"
    assert ("mkdir", "/restored/root") not in fake.calls
    assert not (tmp_path / "guest/restored/root").exists()
