"""Hadoop's local file system without a `chmod` process per file, for a local Spark master.

Without Hadoop's native library (pip's pyspark ships none) RawLocalFileSystem forks `chmod` for
every file and folder Spark creates; hadoop/NoForkLocalFileSystem.java sets the same mode bits in
the JVM. Its jar is compiled once per machine (source, Hadoop and javac versions) into
~/.cache/ml_assets/hadoop/<key>/ and put on the driver's class path. Without a JDK nothing changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_LOCAL_FS = "org.apache.hadoop.fs.RawLocalFileSystem"
NO_FORK_LOCAL_FS = "ml_assets.hadoop.NoForkLocalFileSystem"
FS_IMPL_KEY = "spark.hadoop.fs.file.impl"
CLASS_PATH_KEY = "spark.driver.extraClassPath"
SOURCE = Path(__file__).resolve().parent / "hadoop" / "NoForkLocalFileSystem.java"
JAR_NAME = "ml_assets-hadoop-nofork.jar"
# Spark 4 runs on Java 17+: class files for 17 load in any JVM Spark accepts.
JAVA_RELEASE = "17"
BUILD_TIMEOUT_S = 120
# local, local[4], local[*], local[4,2]; not local-cluster[...] (executors in other JVMs).
_LOCAL_MASTER = re.compile(r"^local(\[[^\]]*\])?$")
_warned: set[str] = set()


def cache_root() -> Path:
    return Path.home() / ".cache" / "ml_assets" / "hadoop"


def find_javac() -> Path | None:
    """javac of JAVA_HOME (the JDK Spark itself would use), else the first on PATH."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home:
        candidate = Path(java_home) / "bin" / "javac"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("javac")
    return Path(found) if found else None


def spark_jars_dir() -> Path | None:
    """The jars folder the driver JVM loads: SPARK_HOME's if set (as pyspark does), else pyspark's own."""
    spark_home = os.environ.get("SPARK_HOME", "").strip()
    if spark_home:
        return Path(spark_home) / "jars"
    import importlib.util

    spec = importlib.util.find_spec("pyspark")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "jars"


def hadoop_client_api_jar() -> Path | None:
    jars = spark_jars_dir()
    found = sorted(jars.glob("hadoop-client-api-*.jar")) if jars and jars.is_dir() else []
    return found[-1] if found else None


def javac_version(javac: Path) -> str:
    """The JDK's `release` file (no JVM start), else `javac -version`."""
    release = javac.resolve().parent.parent / "release"
    if release.is_file():
        for line in release.read_text(errors="replace").splitlines():
            if line.startswith("JAVA_VERSION="):
                return line.split("=", 1)[1].strip().strip('"')
    done = subprocess.run([str(javac), "-version"], capture_output=True, text=True, timeout=60)
    return (done.stdout + done.stderr).strip()


def cache_key(source: bytes, api_jar_name: str, version: str) -> str:
    digest = hashlib.sha256(source)
    for part in (api_jar_name, version, JAVA_RELEASE):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:20]


def _warn(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        log.warning("Spark keeps %s (a chmod process per written file): %s", DEFAULT_LOCAL_FS, reason)


def _build(javac: Path, api_jar: Path, out_jar: Path) -> None:
    classes = out_jar.parent / "classes"
    classes.mkdir()
    command = [str(javac), "--release", JAVA_RELEASE, "-nowarn", "-cp", str(api_jar),
               "-d", str(classes), str(SOURCE)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"javac exited {done.returncode}: {(done.stderr or done.stdout).strip()[:300]}")
    with zipfile.ZipFile(out_jar, "w", zipfile.ZIP_DEFLATED) as jar:
        jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nCreated-By: ml_assets\r\n\r\n")
        for path in sorted(classes.rglob("*.class")):
            jar.write(path, path.relative_to(classes).as_posix())
    shutil.rmtree(classes)


def no_fork_jar(cache_dir: Path | None = None) -> Path | None:
    """The compiled jar, built on first use; None (one warning) without javac or if the build fails."""
    javac = find_javac()
    if javac is None:
        _warn("no javac (set JAVA_HOME to a JDK or put javac on PATH)")
        return None
    api_jar = hadoop_client_api_jar()
    if api_jar is None:
        _warn(f"no hadoop-client-api-*.jar in {spark_jars_dir()}")
        return None
    root = cache_dir or cache_root()
    try:
        final = root / cache_key(SOURCE.read_bytes(), api_jar.name, javac_version(javac))
        if (final / JAR_NAME).is_file():
            return final / JAR_NAME
        root.mkdir(parents=True, exist_ok=True)
        # Build in a private folder, then rename it into place: a folder under its final name is
        # always complete, and of concurrent builders the first rename wins, the others discard theirs.
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            _build(javac, api_jar, staging / JAR_NAME)
            try:
                os.rename(staging, final)
            except OSError:
                if not (final / JAR_NAME).is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _warn(f"building {JAR_NAME} with {javac} failed: {type(exc).__name__}: {exc}")
        return None
    return final / JAR_NAME


def jvm_started() -> bool:
    """Whether this process already has a Spark JVM, whose class path can no longer change."""
    if os.environ.get("PYSPARK_GATEWAY_PORT"):  # launched by spark-submit: the JVM came first
        return True
    if "pyspark" not in sys.modules:
        return False
    from pyspark import SparkContext

    return SparkContext._gateway is not None or SparkContext._active_spark_context is not None


def local_fs_config(config: Mapping[str, str]) -> dict[str, str]:
    """A copy of `config`, with the no-fork local file system when that is safe.

    Only for a local master whose fs.file.impl is the default raw file system, before this
    process's JVM starts; a cluster's executors would not have the class.
    """
    settings = dict(config)
    if not _LOCAL_MASTER.match(str(settings.get("spark.master", "")).strip()):
        return settings
    if settings.get(FS_IMPL_KEY) != DEFAULT_LOCAL_FS or jvm_started():
        return settings
    jar = no_fork_jar()
    if jar is None:
        return settings
    settings[FS_IMPL_KEY] = NO_FORK_LOCAL_FS
    existing = str(settings.get(CLASS_PATH_KEY, "")).strip()
    settings[CLASS_PATH_KEY] = os.pathsep.join([str(jar), existing]) if existing else str(jar)
    return settings
