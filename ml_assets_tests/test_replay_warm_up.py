"""The replay's warm-up: the Spark session in a background thread, TensorFlow imported in another; never raises."""

import sys

from ml_assets.replay.warm_up import start_spark, start_tensorflow


class _Spark:
    def __init__(self, error: Exception | None = None):
        self.started, self.error = 0, error

    @property
    def spark_session(self):
        self.started += 1
        if self.error is not None:
            raise self.error
        return "session"


def test_spark_session_is_started_in_the_background():
    spark, lines = _Spark(), []
    start_spark({"pyspark": spark}, lines.append).join(timeout=60)
    assert spark.started == 1 and lines == []


def test_a_failing_start_is_logged_and_left_to_the_step():
    spark, lines = _Spark(RuntimeError("JAVA_HOME is not set")), []
    thread = start_spark({"pyspark": spark}, lines.append)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert lines == ["warm-up: RuntimeError: JAVA_HOME is not set (left to the step that needs it)"]


def test_without_spark_nothing_starts():
    assert start_spark({}, print) is None


def test_tensorflow_is_imported_in_the_background():
    thread = start_tensorflow()
    if thread is not None:
        thread.join(timeout=120)
    assert "tensorflow" in sys.modules and "keras" in sys.modules
