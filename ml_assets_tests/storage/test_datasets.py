"""DatasetStore: versioned partitions on top of every BlobStore backend (via `blob_store`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_assets.storage import (
    AzureBlobStore,
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    DatasetStore,
    LocalBlobStore,
)
from ml_assets.storage.datasets import partition_prefix


@pytest.fixture
def datasets(blob_store: BlobStore, tmp_path: Path) -> DatasetStore:
    return DatasetStore(blob_store, cache_dir=tmp_path / "cache")


def make_version(folder: Path, files: dict[str, bytes]) -> Path:
    """A folder as Spark would leave it: data files plus bookkeeping that is not data."""
    folder.mkdir(parents=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-0.parquet.crc").write_bytes(b"crc")
    return folder


def read_folder(folder: str | Path) -> dict[str, bytes]:
    root = Path(folder)
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".complete"
    }


def version_folders(store: BlobStore, table: str, partition: str) -> list[str]:
    prefix = f"{partition_prefix(table, partition)}/v="
    return sorted({b.key[len(prefix) :].split("/", 1)[0] for b in store.list(prefix)})


def test_publish_then_resolve(datasets: DatasetStore, blob_store: BlobStore, tmp_path: Path):
    files = {"part-0.parquet": b"rows 0", "part-1.parquet": b"rows 1", "sub/part-2.parquet": b"2"}
    version = datasets.publish("flights", "2024-01-01", make_version(tmp_path / "v1", files))

    assert version.table == "flights"
    assert version.partition == "2024-01-01"
    assert version.prefix == f"tables/flights/date=2024-01-01/v={version.version}"
    assert datasets.current("flights", "2024-01-01") == version
    assert datasets.require("flights", "2024-01-01") == version
    # Only data files were uploaded: no _SUCCESS, no .crc.
    assert [b.key for b in blob_store.list(version.prefix + "/")] == [
        f"{version.prefix}/{name}" for name in sorted(files)
    ]

    [folder] = datasets.local_paths("flights", ["2024-01-01"])
    assert read_folder(folder) == files
    if isinstance(blob_store, AzureBlobStore):
        # Downloaded into the cache and marked complete.
        assert Path(folder).is_relative_to(tmp_path / "cache")
        assert (Path(folder) / ".complete").is_file()
    else:
        assert isinstance(blob_store, LocalBlobStore)
        assert Path(folder).is_relative_to(blob_store.root)


def test_partitions_lists_live_date_partitions(datasets: DatasetStore, tmp_path: Path):
    assert datasets.partitions("flights") == []
    for day in ["2024-01-03", "2024-01-01", "2024-01-02"]:
        datasets.publish("flights", day, make_version(tmp_path / day, {"p.parquet": day.encode()}))
    datasets.publish("weather", "2024-01-09", make_version(tmp_path / "w", {"p.parquet": b"w"}))
    datasets.publish("flights", "", make_version(tmp_path / "all", {"p.parquet": b"all"}))

    assert datasets.partitions("flights") == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert datasets.partitions("weather") == ["2024-01-09"]
    paths = datasets.local_paths("flights", ["2024-01-02", "2024-01-03"])
    assert [read_folder(p) for p in paths] == [
        {"p.parquet": b"2024-01-02"},
        {"p.parquet": b"2024-01-03"},
    ]
    # The unpartitioned table lives under "all".
    assert datasets.require("flights", "").prefix.startswith("tables/flights/all/v=")
    assert [read_folder(p) for p in datasets.local_paths("flights", [""])] == [
        {"p.parquet": b"all"}
    ]


def test_republish_replaces_and_keeps_two_versions(
    datasets: DatasetStore, blob_store: BlobStore, tmp_path: Path
):
    published = []
    for n in range(4):
        folder = make_version(tmp_path / f"v{n}", {"part-0.parquet": f"version {n}".encode()})
        published.append(datasets.publish("t", "2024-02-01", folder))
        assert datasets.current("t", "2024-02-01") == published[-1]
        assert [read_folder(p) for p in datasets.local_paths("t", ["2024-02-01"])] == [
            {"part-0.parquet": f"version {n}".encode()}
        ]
        kept = version_folders(blob_store, "t", "2024-02-01")
        assert kept == sorted(v.version for v in published[-2:])

    # The previous version is still whole, for readers that resolved it before the swap.
    previous = published[-2]
    assert blob_store.get(f"{previous.prefix}/part-0.parquet") == b"version 2"
    assert not blob_store.exists(f"{published[0].prefix}/part-0.parquet")


def test_republish_with_fewer_files_drops_the_old_ones(datasets: DatasetStore, tmp_path: Path):
    datasets.publish(
        "t", "2024-02-01", make_version(tmp_path / "a", {"a.parquet": b"a", "b.parquet": b"b"})
    )
    datasets.publish("t", "2024-02-01", make_version(tmp_path / "b", {"a.parquet": b"A"}))
    [folder] = datasets.local_paths("t", ["2024-02-01"])
    assert read_folder(folder) == {"a.parquet": b"A"}


def test_failed_publish_leaves_previous_version_live(
    datasets: DatasetStore, blob_store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    good = datasets.publish(
        "t",
        "2024-03-01",
        make_version(tmp_path / "good", {"a.parquet": b"good a", "b.parquet": b"good b"}),
    )
    real_put_file = blob_store.put_file
    uploads: list[str] = []

    def fail_on_second_file(key: str, path: Path):
        uploads.append(key)
        if len(uploads) == 2:
            raise BlobStoreError(f"simulated upload failure of {blob_store.describe(key)}")
        return real_put_file(key, path)

    monkeypatch.setattr(blob_store, "put_file", fail_on_second_file)
    bad_folder = make_version(tmp_path / "bad", {"a.parquet": b"bad a", "b.parquet": b"bad b"})
    with pytest.raises(BlobStoreError, match="simulated upload failure"):
        datasets.publish("t", "2024-03-01", bad_folder)
    assert len(uploads) == 2  # the first file of the new version did get uploaded

    assert datasets.current("t", "2024-03-01") == good
    [folder] = datasets.local_paths("t", ["2024-03-01"])
    assert read_folder(folder) == {"a.parquet": b"good a", "b.parquet": b"good b"}

    # The next successful publish keeps the version that was live (readers may hold it) and
    # drops the half-uploaded one.
    monkeypatch.setattr(blob_store, "put_file", real_put_file)
    new = datasets.publish("t", "2024-03-01", make_version(tmp_path / "new", {"a.parquet": b"new"}))
    assert datasets.current("t", "2024-03-01") == new
    assert version_folders(blob_store, "t", "2024-03-01") == sorted([good.version, new.version])
    assert blob_store.get(f"{good.prefix}/b.parquet") == b"good b"


def test_require_missing_partition_names_table_and_partition(
    datasets: DatasetStore, tmp_path: Path
):
    datasets.publish("flights", "2024-01-01", make_version(tmp_path / "v", {"p.parquet": b"x"}))
    assert datasets.current("flights", "2024-01-02") is None
    with pytest.raises(BlobNotFoundError) as caught:
        datasets.require("flights", "2024-01-02")
    assert "flights" in str(caught.value)
    assert "2024-01-02" in str(caught.value)
    assert datasets.blobs.location in str(caught.value)
    with pytest.raises(BlobNotFoundError, match="2024-01-05"):
        datasets.local_paths("flights", ["2024-01-01", "2024-01-05"])
    with pytest.raises(BlobNotFoundError, match=r"weather.*\(unpartitioned\)"):
        datasets.require("weather", "")


def test_publishing_an_empty_folder_refuses(
    datasets: DatasetStore, blob_store: BlobStore, tmp_path: Path
):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        BlobStoreError, match=r"refusing to publish an empty version of t/date=2024-04-01"
    ):
        datasets.publish("t", "2024-04-01", empty)
    # Only Spark bookkeeping, no data: just as empty.
    with pytest.raises(BlobStoreError, match="refusing"):
        datasets.publish("t", "2024-04-01", make_version(tmp_path / "bookkeeping", {}))
    assert list(blob_store.list()) == []
    assert datasets.current("t", "2024-04-01") is None


def _parquet_bytes(values: list[int]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"x": values}), sink)
    return sink.getvalue()


def test_staged_spark_output_is_published_from_inside_the_store(datasets, blob_store):
    staging = datasets.new_staging("features")
    for key, data in {
        "__partition=2024-01-01/part-00000-a.snappy.parquet": _parquet_bytes([1, 2]),
        "__partition=2024-01-01/part-00001-a.snappy.parquet": _parquet_bytes([3]),
        "__partition=2024-01-01/.part-00000-a.snappy.parquet.crc": b"crc",
        "__partition=2024-01-02/part-00000-a.snappy.parquet": _parquet_bytes([4]),
        "_SUCCESS": b"",
    }.items():
        blob_store.put(f"{staging}/{key}", data)

    staged = datasets.staged_files(staging)
    assert {folder: len(files) for folder, files in staged.items()} == {
        "__partition=2024-01-01": 2, "__partition=2024-01-02": 1}
    # Footers are read in place on the local store; other stores leave counting to Spark.
    expected_rows = 3 if isinstance(blob_store, LocalBlobStore) else None
    assert datasets.footer_rows(staged["__partition=2024-01-01"]) == expected_rows
    first = datasets.publish_staged("features", "2024-01-01", staged["__partition=2024-01-01"])
    datasets.publish_staged("features", "2024-01-02", staged["__partition=2024-01-02"])
    datasets.discard(staging)

    assert datasets.current("features", "2024-01-01") == first
    assert sorted(datasets.read_frame("features", ["2024-01-01", "2024-01-02"]).x) == [1, 2, 3, 4]
    assert datasets.row_count("features", "2024-01-01") == 3
    assert list(blob_store.list(f"{staging}/")) == []
    assert all(b.sha256 for b in blob_store.list("tables/features/"))
    with pytest.raises(BlobStoreError, match="refusing to publish an empty version"):
        datasets.publish_staged("features", "2024-01-03", [])


def test_spark_paths_are_the_store_itself_for_the_local_store(tmp_path):
    store = LocalBlobStore(tmp_path / "store")
    datasets = DatasetStore(store, cache_dir=tmp_path / "cache")
    version = datasets.publish("t", "2024-01-01", make_version(tmp_path / "v", {"p.parquet": b"x"}))
    assert datasets.shared and datasets.spark_root == str(store.root)
    assert datasets.spark_paths("t", ["2024-01-01"]) == [str(store.root / version.prefix)]
    assert not (tmp_path / "cache").exists()  # nothing downloaded for Spark


def test_read_frame_reads_a_version_once_and_follows_republishing(datasets: DatasetStore, tmp_path: Path,
                                                                  monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def version(name: str, values: list[int]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        pq.write_table(pa.table({"x": values, "y": [str(v) for v in values]}), folder / "part-0.parquet")
        return folder

    datasets.publish("t", "2024-02-01", version("a", [1, 2]))
    datasets.publish("t", "2024-02-02", version("b", [3]))
    reads = []
    real_read = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: reads.append(a[0]) or real_read(*a, **k))
    days = ["2024-02-01", "2024-02-02"]
    first = datasets.read_frame("t", days, columns=["x"])
    assert first["x"].tolist() == [1, 2, 3] and list(first.columns) == ["x"] and len(reads) == 2
    # Same versions again (another window holding them): no file is read again, an equal frame comes back.
    first.loc[0, "x"] = 99  # the caller's frame is its own
    assert datasets.read_frame("t", days, columns=["x"])["x"].tolist() == [1, 2, 3] and len(reads) == 2
    assert datasets.read_frame("t", days[:1])["y"].tolist() == ["1", "2"] and len(reads) == 3  # other columns
    # A new live version is read from its own files.
    datasets.publish("t", "2024-02-01", version("c", [7]))
    assert datasets.read_frame("t", days, columns=["x"])["x"].tolist() == [7, 3] and len(reads) == 4
    with pytest.raises(BlobNotFoundError, match="2024-02-03"):
        datasets.read_frame("t", ["2024-02-03"])
    # Over the memory budget nothing is kept: every read reads the files.
    monkeypatch.setattr("ml_assets.storage.datasets.VERSION_TABLES_MAX_BYTES", 0)
    for _ in range(2):
        assert datasets.read_frame("t", ["2024-02-02"], columns=["y"])["y"].tolist() == ["3"]
    assert len(reads) == 6
