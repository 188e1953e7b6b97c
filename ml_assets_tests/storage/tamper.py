"""Tampering with stored blobs the way bit rot or an attacker would, on each backend.

`rot` changes the content but keeps everything a cheap check looks at: on a local store the
same inode, size and mtime (so the sha256 sidecar still "matches"); on Azure the blob's
metadata, including the sha256 recorded at write time (content replaced, metadata kept).
`rewrite` replaces content the ordinary way for the backend (Azure: metadata recomputed),
for edits that must be caught by the digest recorded elsewhere (the champion pointer).
"""

from __future__ import annotations

import os

from ml_assets.storage import BlobStore, LocalBlobStore


def rot(blobs: BlobStore, key: str, offset: int = 0) -> None:
    """Flip the low bit of one byte of a stored blob, keeping its stat / metadata."""
    data = bytearray(blobs.get(key) if not isinstance(blobs, LocalBlobStore) else b"")
    if isinstance(blobs, LocalBlobStore):
        path = blobs.root / key
        before = path.stat()
        with open(path, "r+b") as handle:  # in place: same inode
            handle.seek(offset)
            byte = handle.read(1)
            handle.seek(offset)
            handle.write(bytes([byte[0] ^ 0x01]))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = path.stat()
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        )
        return
    data[offset] ^= 0x01
    replace_keeping_metadata(blobs, key, bytes(data))


def replace_keeping_metadata(blobs: BlobStore, key: str, data: bytes) -> None:
    """Azure: upload new content under the blob's old metadata (its recorded sha256 kept)."""
    client = blobs.container.get_blob_client(key)  # type: ignore[attr-defined]
    metadata = client.get_blob_properties().metadata
    client.upload_blob(data, overwrite=True, metadata=metadata)
    assert client.get_blob_properties().metadata == metadata


def rewrite(blobs: BlobStore, key: str, data: bytes) -> None:
    """Replace a blob's content; a local file is edited in place with its mtime kept."""
    if isinstance(blobs, LocalBlobStore):
        path = blobs.root / key
        before = path.stat()
        with open(path, "r+b") as handle:
            handle.write(data)
            handle.truncate()
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        return
    blobs.put(key, data)
