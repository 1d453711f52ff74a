"""Repository creation/opening, keys and the chunk codec."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from pathlib import Path

import blake3
import pytest

from app.chunkstore import (
    ChunkDamaged,
    FsBackend,
    Repository,
    RepositoryExists,
    RepositoryNotFound,
    WrongPassphrase,
)
from app.chunkstore import repository as repository_module
from app.chunkstore.ids import chunk_key, parse_chunk_key
from tests.chunkstore.conftest import CHUNK, FAST_KDF, PASSPHRASE, new_repo


def test_config_is_self_describing(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r", encrypted=True)
    doc = json.loads((tmp_path / "r" / "config").read_bytes())
    assert doc["format"] == 1
    assert doc["id"] == repo.id
    assert doc["chunk_size"] == CHUNK
    assert doc["hash"] == "blake3-keyed"
    assert doc["compression"] == {"algorithm": "zstd", "level": 1}
    assert doc["encryption"]["algorithm"] == "aes-256-gcm"
    assert doc["encryption"]["kdf"]["name"] == "scrypt"
    plain = json.loads(new_repo(tmp_path / "p").backend.get("config"))
    assert plain["hash"] == "blake3"
    assert plain["encryption"] is None


def test_open_roundtrip_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root, encrypted=True)
    again = Repository.open(FsBackend(root), passphrase=PASSPHRASE)
    assert again.id == repo.id
    assert again.encrypted
    data = os.urandom(1000)
    assert again.chunk_id(data) == repo.chunk_id(data)
    with pytest.raises(WrongPassphrase):
        Repository.open(FsBackend(root), passphrase="wrong horse")
    with pytest.raises(WrongPassphrase):
        Repository.open(FsBackend(root))
    with pytest.raises(RepositoryExists):
        new_repo(root)
    with pytest.raises(RepositoryNotFound):
        Repository.open(FsBackend(tmp_path / "nothing"))


def test_master_key_never_in_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    master = os.urandom(32)
    monkeypatch.setattr(repository_module, "new_master_key", lambda: master)
    root = tmp_path / "r"
    repo = new_repo(root, encrypted=True)
    repo.put_chunk(repo.chunk_id(b"x" * 100), b"x" * 100)
    forms = [master, master.hex().encode(), base64.b64encode(master), base64.urlsafe_b64encode(master)]
    for path in root.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(form in content for form in forms), path


def test_change_passphrase_keeps_data(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root, encrypted=True)
    data = os.urandom(5000)
    cid = repo.chunk_id(data)
    repo.put_chunk(cid, data)
    repo.change_passphrase("new passphrase", PASSPHRASE)
    with pytest.raises(WrongPassphrase):
        Repository.open(FsBackend(root), passphrase=PASSPHRASE)
    reopened = Repository.open(FsBackend(root), passphrase="new passphrase")
    assert reopened.get_chunk(cid) == data


def test_chunk_ids_plain_vs_keyed(tmp_path: Path) -> None:
    data = b"some block content" * 100
    plain = new_repo(tmp_path / "p")
    enc1 = new_repo(tmp_path / "e1", encrypted=True)
    enc2 = new_repo(tmp_path / "e2", encrypted=True)
    assert plain.chunk_id(data) == blake3.blake3(data).digest()
    assert enc1.chunk_id(data) != blake3.blake3(data).digest()
    assert enc1.chunk_id(data) != enc2.chunk_id(data)  # the key is per repository


def test_compression_and_raw_storage(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    text = (b"the quick brown fox jumps over the lazy dog " * 1500)[:CHUNK]
    random_block = os.urandom(CHUNK)
    assert repo.put_chunk(repo.chunk_id(text), text) < len(text) // 10
    # Incompressible data is stored raw: only the 2-byte header is added.
    assert repo.put_chunk(repo.chunk_id(random_block), random_block) == CHUNK + 2
    assert repo.get_chunk(repo.chunk_id(text)) == text
    assert repo.get_chunk(repo.chunk_id(random_block)) == random_block


def test_encrypted_chunk_does_not_contain_plaintext(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r", encrypted=True)
    data = os.urandom(CHUNK)
    cid = repo.chunk_id(data)
    repo.put_chunk(cid, data)
    stored = (tmp_path / "r" / chunk_key(cid)).read_bytes()
    assert data[:64] not in stored
    assert len(stored) == CHUNK + 2 + 12 + 16


@pytest.mark.parametrize("encrypted", [False, True])
def test_tampered_chunk_is_damaged(tmp_path: Path, encrypted: bool) -> None:
    repo = new_repo(tmp_path / "r", encrypted=encrypted)
    data = os.urandom(3000) + bytes(3000)
    cid = repo.chunk_id(data)
    repo.put_chunk(cid, data)
    path = tmp_path / "r" / chunk_key(cid)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 3] ^= 0x01  # inside the random part: raw literals in the zstd frame
    path.write_bytes(bytes(blob))
    with pytest.raises(ChunkDamaged) as info:
        repo.get_chunk(cid)
    assert cid.hex() in str(info.value)
    assert info.value.chunk_id == cid


def test_chunk_renamed_to_other_id_is_damaged(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r", encrypted=True)
    a, b = os.urandom(100), os.urandom(100)
    ida, idb = repo.chunk_id(a), repo.chunk_id(b)
    repo.put_chunk(ida, a)
    repo.put_chunk(idb, b)
    (tmp_path / "r" / chunk_key(ida)).write_bytes((tmp_path / "r" / chunk_key(idb)).read_bytes())
    with pytest.raises(ChunkDamaged, match="authentication failed"):
        repo.get_chunk(ida)


def test_plaintext_chunk_refused_in_encrypted_repo(tmp_path: Path) -> None:
    enc = new_repo(tmp_path / "e", encrypted=True)
    plain = new_repo(tmp_path / "p")
    data = b"planted"
    cid = enc.chunk_id(data)
    plain.put_chunk(cid, data)  # stored unencrypted under the id the encrypted repo expects
    (tmp_path / "e" / chunk_key(cid)).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "e" / chunk_key(cid)).write_bytes((tmp_path / "p" / chunk_key(cid)).read_bytes())
    with pytest.raises(ChunkDamaged, match="unencrypted chunk"):
        enc.get_chunk(cid)


def test_missing_batches_and_cache(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    blocks = [os.urandom(64) for _ in range(600)]
    ids = [repo.chunk_id(b) for b in blocks]
    for b, cid in zip(blocks[:300], ids[:300], strict=True):
        repo.put_chunk(cid, b)
    calls: list[int] = []
    original = repo.backend.touch_many

    def counting(keys: Iterable[str]) -> set[str]:
        batch = list(keys)
        calls.append(len(batch))
        return original(batch)

    repo.backend.touch_many = counting  # type: ignore[method-assign]
    assert repo.missing(ids) == set(ids[300:])
    assert max(calls) <= repository_module.EXISTS_BATCH
    assert sum(calls) == 300  # the 300 ids stored by this process were known present: not asked again
    calls.clear()
    assert repo.missing(ids[:300]) == set()
    assert calls == []


def test_oversized_chunk_refused(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    data = bytes(repo.max_chunk_size + 1)
    with pytest.raises(ValueError, match="largest chunk"):
        repo.put_chunk(repo.chunk_id(data), data)
    # A chunk longer than the disk chunk size is fine up to the stream bound (content-defined chunks).
    longer = os.urandom(CHUNK + 1)
    assert repo.put_chunk(repo.chunk_id(longer), longer) > 0
    assert repo.get_chunk(repo.chunk_id(longer)) == longer


def test_chunk_key_roundtrip() -> None:
    cid = os.urandom(32)
    assert parse_chunk_key(chunk_key(cid)) == cid
    assert parse_chunk_key("chunks/zz/" + cid.hex()) is None
    assert parse_chunk_key("indexes/x/0") is None


def test_invalid_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk size"):
        Repository.create(FsBackend(tmp_path / "a"), chunk_size=1000)
    with pytest.raises(ValueError, match="zstd level"):
        Repository.create(FsBackend(tmp_path / "b"), compression_level=99)
    with pytest.raises(ValueError, match="passphrase"):
        Repository.create(FsBackend(tmp_path / "c"), passphrase="", kdf=FAST_KDF)


def test_open_backend_builder(tmp_path: Path) -> None:
    from app.chunkstore import open_backend, tune_malloc

    assert isinstance(open_backend(tmp_path / "a"), FsBackend)
    backend = open_backend(f"file://{tmp_path / 'b'}")
    assert isinstance(backend, FsBackend)
    assert backend.root == tmp_path / "b"
    with pytest.raises(ValueError, match="scheme"):
        open_backend("ftp://host/x")
    assert tune_malloc() in (True, False)  # idempotent; True on glibc
    assert tune_malloc() == tune_malloc()
