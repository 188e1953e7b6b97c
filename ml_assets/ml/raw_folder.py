"""Day folders as users fill them: which blobs are data, and their bytes decompressed as declared.

No Dagster, no Arrow: pure functions over blob keys and bytes, shared by the raw assets and tests.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ml_assets.spec.sources import SourceSpec

GZIP_MAGIC = b"\x1f\x8b"
# Other containers users drop into a folder by mistake, named in the error instead of a decode failure.
_OTHER_MAGIC = {
    b"PAR1": "Parquet data",
    b"PK\x03\x04": "zip archive",
    b"BZh": "bzip2 data",
    b"\xfd7zXZ\x00": "xz data",
    b"\x28\xb5\x2f\xfd": "zstd data",
}


class MalformedBlobError(ValueError):
    """A landed blob cannot be used; the message names the blob and the problem."""


@dataclass(frozen=True)
class DayFolder:
    """The blobs of one source's day folder, split into data and ignored (relative paths kept)."""

    data: list[str]
    ignored: list[str]


def split_day_folder(source: SourceSpec, folder: str, keys: list[str]) -> DayFolder:
    """Data blobs match one of source.file_patterns and have no path segment matching source.ignore."""
    data, ignored = [], []
    for key in keys:
        inside = key[len(folder):].lstrip("/")
        segments = inside.split("/")
        hidden = any(fnmatchcase(segment, pattern) for segment in segments for pattern in source.ignore)
        wanted = any(fnmatchcase(inside, pattern) for pattern in source.file_patterns)
        (data if wanted and not hidden else ignored).append(key)
    return DayFolder(data, ignored)


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def duplicate_blobs(digests: dict[str, str]) -> list[tuple[str, str]]:
    """(first blob, its copy) for every blob whose content equals an earlier one's, in the dict's order.

    Callers pass blobs oldest first, so the copy named is the one that arrived later.
    """
    seen: dict[str, str] = {}
    pairs = []
    for blob in digests:
        first = seen.setdefault(digests[blob], blob)
        if first != blob:
            pairs.append((first, blob))
    return pairs


def decode_blob(data: bytes, source: SourceSpec, blob: str) -> bytes:
    """The blob's bytes as the parser reads them: gunzipped if declared, other containers refused by name."""
    if source.format == "parquet":
        if data.startswith(GZIP_MAGIC):
            raise MalformedBlobError(f"{blob}: gzip data in a .parquet blob (Parquet compresses inside the file)")
        return data
    is_gzip = data.startswith(GZIP_MAGIC)
    if source.compression == "gzip" and not is_gzip:
        raise MalformedBlobError(
            f"{blob}: not gzip data (the source declares compression: gzip; first bytes {data[:4]!r})"
        )
    if is_gzip:
        if source.compression == "none":
            raise MalformedBlobError(
                f"{blob}: gzip data in a .csv blob; declare compression: gzip (or auto) for this source"
            )
        data = _gunzip(data, blob, source.max_decompressed_bytes)
    for magic, kind in _OTHER_MAGIC.items():
        if data.startswith(magic):
            raise MalformedBlobError(f"{blob}: {kind} in a csv blob; the source declares format: csv")
    return data


def _gunzip(data: bytes, blob: str, limit: int) -> bytes:
    """All gzip members of the blob, refusing output beyond `limit` bytes before producing it."""
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise MalformedBlobError(f"{blob}: corrupt gzip data ({exc})") from None
        if len(out) > limit:
            raise MalformedBlobError(
                f"{blob}: gzip data expands beyond the source's max_decompressed_bytes of {limit:,}")
        if not inflater.eof:
            raise MalformedBlobError(f"{blob}: gzip stream ends early; the blob looks truncated")
        rest = inflater.unused_data.lstrip(b"\0")  # zero padding after the last member, as gzip(1) allows
    return bytes(out)
