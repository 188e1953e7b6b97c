"""Writes the same Parquet table and sets the same modes through both local file systems, in a
fresh JVM (the driver class path is fixed when the JVM starts). Prints one JSON line.

    python -m ml_assets_tests.storage.hadoop_local_probe OUT_DIR

The session comes from LazySparkResource with the default (raw) settings, so the no-fork class is
whatever that resource chose. Between phases it runs `true <phase>`: under `strace -f -e
trace=execve` those marks split the trace into the no-fork and the raw phases.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from ml_assets.defs.settings import DEFAULT_SPARK_CONFIG
from ml_assets.resources.spark import LazySparkResource
from ml_assets.storage.hadoop_local import DEFAULT_LOCAL_FS, NO_FORK_LOCAL_FS

PROBE_CONFIG = {**DEFAULT_SPARK_CONFIG, "spark.master": "local[2]", "spark.driver.memory": "1g",
                "spark.sql.shuffle.partitions": "2"}
# Octal modes given to create, mkdirs and setPermission; 1777 has the sticky bit (java.nio cannot
# set it: the class hands it to the raw file system).
MODES = ("755", "700", "640", "604", "000", "777", "1777")


def mark(phase: str) -> None:
    subprocess.run(["true", f"ml-assets-probe-{phase}"], check=True)


def tree(root: Path) -> dict[str, dict]:
    """Mode and sha256 per file and folder; the part file's job-unique name is reduced to `part`."""
    entries = {}
    for path in sorted([root, *root.rglob("*")]):
        name = path.relative_to(root).as_posix()
        if path.name.startswith("part-"):
            name = f"{path.parent.relative_to(root).as_posix()}/part{''.join(path.suffixes[-2:])}"
        mode = stat.S_IMODE(path.stat().st_mode)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        entries[name] = {"mode": oct(mode), "sha256": digest}
    return entries


def permissions(spark, root: Path) -> dict[str, object]:
    """Modes after Hadoop's create/mkdirs/setPermission, and how a missing file fails."""
    jvm = spark._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    fs = jvm.org.apache.hadoop.fs.Path(root.as_uri()).getFileSystem(conf)
    result: dict[str, object] = {"fs_class": fs.getClass().getName()}
    for octal in MODES:
        perm = jvm.org.apache.hadoop.fs.permission.FsPermission(octal)
        made = jvm.org.apache.hadoop.fs.Path((root / f"created-{octal}").as_uri())
        fs.create(made, perm, True, 4096, 1, 1 << 20, None).close()
        folder = jvm.org.apache.hadoop.fs.Path((root / f"dir-{octal}").as_uri())
        fs.mkdirs(folder, perm)
        changed = root / f"chmod-{octal}"
        changed.write_text(octal)
        changed_dir = root / f"chmod-dir-{octal}"
        changed_dir.mkdir()
        for path in (changed, changed_dir):
            fs.setPermission(jvm.org.apache.hadoop.fs.Path(path.as_uri()), perm)
        hadoop_view = fs.getFileStatus(jvm.org.apache.hadoop.fs.Path(changed.as_uri())).getPermission()
        result[octal] = {
            "created": oct(stat.S_IMODE((root / f"created-{octal}").stat().st_mode)),
            "mkdirs": oct(stat.S_IMODE((root / f"dir-{octal}").stat().st_mode)),
            "chmod_file": oct(stat.S_IMODE(changed.stat().st_mode)),
            "chmod_dir": oct(stat.S_IMODE(changed_dir.stat().st_mode)),
            "hadoop_view": str(hadoop_view.toString()),
        }
    io_exception = jvm.java.lang.Class.forName("java.io.IOException")
    try:
        fs.setPermission(jvm.org.apache.hadoop.fs.Path((root / "missing").as_uri()),
                         jvm.org.apache.hadoop.fs.permission.FsPermission("644"))
        result["missing"] = "no error"
    except Exception as exc:  # py4j's error carries the Java exception
        java = getattr(exc, "java_exception", None)
        result["missing"] = "IOException" if java is not None and io_exception.isInstance(java) else repr(exc)
    for path in root.iterdir():  # leave nothing unreadable for the test's cleanup
        os.chmod(path, 0o755)
    return result


def main() -> None:
    out = Path(sys.argv[1])
    resource = LazySparkResource(spark_config=PROBE_CONFIG)
    spark = resource.spark_session
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    chosen = conf.get("fs.file.impl")
    frame = spark.range(0, 1200).selectExpr("id", "CAST(id % 3 AS STRING) AS day", "id * 0.5 AS x")
    frame = frame.coalesce(1).cache()
    frame.count()
    result: dict[str, object] = {"chosen": chosen,
                                 "class_path": spark.sparkContext.getConf().get("spark.driver.extraClassPath", "")}
    for phase, impl in (("nofork", NO_FORK_LOCAL_FS), ("raw", DEFAULT_LOCAL_FS)):
        conf.set("fs.file.impl", impl)
        spark._jvm.org.apache.hadoop.fs.FileSystem.closeAll()  # the next lookup reads fs.file.impl
        table = out / phase / "table"
        mark(f"{phase}-write")
        frame.write.partitionBy("day").parquet(table.as_uri())
        mark(f"{phase}-done")
        rows = sorted(tuple(row) for row in spark.read.parquet(table.as_uri()).collect())
        (out / phase / "perm").mkdir()
        result[phase] = {"tree": tree(table), "rows": len(rows),
                         "rows_sha256": hashlib.sha256(repr(rows).encode()).hexdigest(),
                         "permissions": permissions(spark, out / phase / "perm")}
    resource.spark_session.stop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
