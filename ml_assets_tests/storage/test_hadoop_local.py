"""The no-fork local file system: same files and modes as Hadoop's raw one without a `chmod`
process per file, chosen only for a local master with the default setting and a fresh JVM."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ml_assets.defs.settings import DEFAULT_SPARK_CONFIG
from ml_assets.storage import hadoop_local
from ml_assets.storage.hadoop_local import (
    CLASS_PATH_KEY,
    DEFAULT_LOCAL_FS,
    FS_IMPL_KEY,
    NO_FORK_LOCAL_FS,
    local_fs_config,
)

REPO = Path(__file__).resolve().parents[2]
LOCAL = {**DEFAULT_SPARK_CONFIG, "spark.master": "local[2]"}
needs_javac = pytest.mark.skipif(hadoop_local.find_javac() is None, reason="no JDK (javac) on this machine")


def _chmod_forks(trace: str, phase: str) -> int:
    """`chmod` processes started between the probe's `<phase>-write` and `<phase>-done` marks."""
    lines = trace.splitlines()
    start = next(i for i, line in enumerate(lines) if f"ml-assets-probe-{phase}-write" in line)
    end = next(i for i, line in enumerate(lines) if f"ml-assets-probe-{phase}-done" in line)
    return sum(1 for line in lines[start:end] if re.search(r'execve\("[^"]*/chmod", .*\) = 0$', line))


@needs_javac
@pytest.mark.spark
def test_same_files_and_modes_as_the_raw_file_system_without_chmod_processes(tmp_path):
    """A fresh JVM (the driver class path is fixed at its start) writes through both classes."""
    command = [sys.executable, "-m", "ml_assets_tests.storage.hadoop_local_probe", str(tmp_path)]
    strace = shutil.which("strace")
    trace_file = tmp_path / "execve.trace"
    if strace:  # proves the missing forks directly; the content checks below hold either way
        command = [strace, "-f", "-qq", "--seccomp-bpf", "-e", "trace=execve", "-o", str(trace_file),
                   *command]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    # LazySparkResource chose the no-fork class for a local master and put its jar on the class path.
    assert result["chosen"] == NO_FORK_LOCAL_FS
    assert result["class_path"].endswith(hadoop_local.JAR_NAME)
    nofork, raw = result["nofork"], result["raw"]
    assert nofork["permissions"].pop("fs_class") == NO_FORK_LOCAL_FS
    assert raw["permissions"].pop("fs_class") == DEFAULT_LOCAL_FS
    # Same Parquet bytes, same mode bits on every file and folder, same rows read back.
    assert set(nofork["tree"]) == {".", "_SUCCESS", "day=0", "day=1", "day=2", *(
        f"day={d}/part.snappy.parquet" for d in range(3))}
    assert nofork["tree"] == raw["tree"]
    assert nofork["rows"] == raw["rows"] == 1200 and nofork["rows_sha256"] == raw["rows_sha256"]
    # setPermission semantics: create, mkdirs and setPermission on files and folders end with
    # the raw file system's modes, including 000, and the sticky bit (handed to the raw class).
    assert nofork["permissions"] == raw["permissions"]
    assert nofork["permissions"]["640"]["chmod_file"] == "0o640"
    assert nofork["permissions"]["000"]["chmod_dir"] == "0o0"
    assert nofork["permissions"]["1777"]["chmod_dir"] == "0o1777"
    assert nofork["permissions"]["missing"] == "IOException"
    if strace:
        trace = trace_file.read_text()
        assert _chmod_forks(trace, "raw") > 0  # the raw class forks: the count can see forks
        assert _chmod_forks(trace, "nofork") == 0


@needs_javac
def test_jar_is_built_once_and_reused(tmp_path, monkeypatch):
    builds = []
    build = hadoop_local._build
    monkeypatch.setattr(hadoop_local, "_build", lambda *args: builds.append(args) or build(*args))
    first = hadoop_local.no_fork_jar(tmp_path)
    assert first is not None and first.is_file() and first.parent.parent == tmp_path
    stamp = first.stat().st_mtime_ns
    assert hadoop_local.no_fork_jar(tmp_path) == first
    assert len(builds) == 1 and first.stat().st_mtime_ns == stamp
    # Only the finished folder is left (the staging folder was renamed or removed).
    assert [p.name for p in tmp_path.iterdir()] == [first.parent.name]


@needs_javac
def test_concurrent_builders_agree_on_one_complete_jar(tmp_path):
    """Processes that all find the cache empty build at once; the first rename wins."""
    code = "import sys; from pathlib import Path; from ml_assets.storage.hadoop_local import no_fork_jar; " \
           "print(no_fork_jar(Path(sys.argv[1])))"
    cache = tmp_path / "cache"
    builders = [subprocess.Popen([sys.executable, "-c", code, str(cache)], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [builder.communicate(timeout=120) for builder in builders]
    jars = {out.strip() for out, _ in outputs}
    assert len(jars) == 1 and all(b.returncode == 0 for b in builders), outputs
    jar = Path(jars.pop())
    with zipfile.ZipFile(jar) as archive:
        assert archive.testzip() is None
        assert "ml_assets/hadoop/NoForkLocalFileSystem.class" in archive.namelist()
    assert [p.name for p in cache.iterdir()] == [jar.parent.name]  # no staging folder left


def test_without_javac_the_config_is_unchanged_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(hadoop_local, "find_javac", lambda: None)
    monkeypatch.setattr(hadoop_local, "jvm_started", lambda: False)
    monkeypatch.setattr(hadoop_local, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=hadoop_local.__name__):
        assert local_fs_config(LOCAL) == LOCAL
        assert local_fs_config(LOCAL) == LOCAL
    assert [r.getMessage() for r in caplog.records] == [
        f"Spark keeps {DEFAULT_LOCAL_FS} (a chmod process per written file): "
        "no javac (set JAVA_HOME to a JDK or put javac on PATH)"]


def test_a_failing_build_returns_none_and_names_why(tmp_path, monkeypatch, caplog):
    fake = tmp_path / "jdk" / "bin" / "javac"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho 'error: broken compiler' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(hadoop_local, "find_javac", lambda: fake)
    monkeypatch.setattr(hadoop_local, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=hadoop_local.__name__):
        assert hadoop_local.no_fork_jar(tmp_path / "cache") is None
    assert "javac exited 3: error: broken compiler" in caplog.text
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no half-built folder


def test_javac_from_java_home_first(tmp_path, monkeypatch):
    javac = tmp_path / "bin" / "javac"
    javac.parent.mkdir()
    javac.write_text("#!/bin/sh\n")
    javac.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    assert hadoop_local.find_javac() == javac
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jre-only"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert hadoop_local.find_javac() is None


def _with_jar(monkeypatch, tmp_path) -> Path:
    jar = tmp_path / hadoop_local.JAR_NAME
    monkeypatch.setattr(hadoop_local, "no_fork_jar", lambda: jar)
    monkeypatch.setattr(hadoop_local, "jvm_started", lambda: False)
    return jar


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]", "local[4,2]"])
def test_local_master_gets_the_class_and_the_jar_first_on_the_class_path(monkeypatch, tmp_path, master):
    jar = _with_jar(monkeypatch, tmp_path)
    config = {**LOCAL, "spark.master": master, CLASS_PATH_KEY: "/opt/extra.jar"}
    original = dict(config)
    settings = local_fs_config(config)
    assert settings[FS_IMPL_KEY] == NO_FORK_LOCAL_FS
    assert settings[CLASS_PATH_KEY] == f"{jar}{os.pathsep}/opt/extra.jar"
    assert config == original  # the resource's own dict is not touched
    assert local_fs_config(LOCAL)[CLASS_PATH_KEY] == str(jar)


@pytest.mark.parametrize("change", [
    {"spark.master": "spark://spark-master:7077"},
    {"spark.master": "local-cluster[2,1,1024]"},
    {"spark.master": "yarn"},
    {FS_IMPL_KEY: "org.apache.hadoop.fs.LocalFileSystem"},
    {FS_IMPL_KEY: "com.example.MyLocalFileSystem"},
])
def test_cluster_masters_and_user_file_systems_are_left_alone(monkeypatch, tmp_path, change):
    _with_jar(monkeypatch, tmp_path)
    config = {**LOCAL, **change}
    assert local_fs_config(config) == config
    without = {k: v for k, v in LOCAL.items() if k != FS_IMPL_KEY}  # Hadoop's checksummed default
    assert local_fs_config(without) == without


def test_a_running_jvm_keeps_its_class_path(monkeypatch, tmp_path):
    _with_jar(monkeypatch, tmp_path)
    monkeypatch.setattr(hadoop_local, "jvm_started", lambda: True)
    assert local_fs_config(LOCAL) == LOCAL
    monkeypatch.undo()
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "40404")  # a driver started by spark-submit
    assert hadoop_local.jvm_started()
