"""Start what the replay will need before it needs it: the Spark session, then TensorFlow.

Both cost seconds once per process (the JVM's start-up; TensorFlow's import) and would otherwise
be paid inside the first features run and the first training cycle. The Spark session starts in
a background thread while the first batch lands (landing and the raw stage need no Spark);
TensorFlow is imported in the background once the first batch is materialized, while the next
batches' Spark runs mostly wait on the JVM (imported beside the first features run, it slowed
that run's start-up as much as it saved). A failure here is left for the step that needs the
same thing to raise, with its own context.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


def start_spark(resources: dict, log: Callable[[str], None]) -> threading.Thread | None:
    """A daemon thread that starts the Spark session (getOrCreate: the steps get the same one)."""
    pyspark = resources.get("pyspark")
    if pyspark is None:
        return None

    def run() -> None:
        try:
            _ = pyspark.spark_session
        except Exception as exc:  # the step that needs it raises it again, in its context
            log(f"warm-up: {type(exc).__name__}: {exc} (left to the step that needs it)")

    thread = threading.Thread(target=run, name="replay-spark-warm-up", daemon=True)
    thread.start()
    return thread


def start_tensorflow() -> threading.Thread | None:
    """TensorFlow and Keras imported in the background (None when already imported)."""
    from ml_assets.ml.models_keras import import_tensorflow_in_background

    return import_tensorflow_in_background()
