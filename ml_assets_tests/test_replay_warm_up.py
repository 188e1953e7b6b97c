"""The replay's warm-up thread: starts the Spark session and imports TensorFlow, never raises."""

import sys

from ml_assets.replay.warm_up import start_warm_up


class _Spark:
    def __init__(self, error: Exception | None = None):
        self.started, self.error = 0, error

    @property
    def spark_session(self):
        self.started += 1
        if self.error is not None:
            raise self.error
        return "session"


def test_warm_up_starts_spark_then_imports_tensorflow():
    spark, lines = _Spark(), []
    start_warm_up({"pyspark": spark}, lines.append).join(timeout=120)
    assert spark.started == 1
    assert "tensorflow" in sys.modules and "keras" in sys.modules
    assert lines == []


def test_a_failing_start_is_logged_and_left_to_the_step():
    spark, lines = _Spark(RuntimeError("JAVA_HOME is not set")), []
    thread = start_warm_up({"pyspark": spark}, lines.append)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert lines == ["warm-up: RuntimeError: JAVA_HOME is not set (left to the step that needs it)"]


def test_without_spark_only_tensorflow_is_warmed():
    lines = []
    start_warm_up({}, lines.append).join(timeout=120)
    assert lines == [] and "tensorflow" in sys.modules
