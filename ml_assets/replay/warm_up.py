"""Start what the replay will need while its first batch lands: the Spark session and TensorFlow.

Both cost seconds once per process (the JVM's start-up; TensorFlow's import) and would otherwise
be paid inside the first features run and the first training cycle. Started in a background
thread they overlap with landing and the raw stage, which need neither. A failure here is left
for the step that needs the same thing to raise, with its own context.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


def _spark(resources: dict) -> Callable[[], object] | None:
    pyspark = resources.get("pyspark")
    return None if pyspark is None else (lambda: pyspark.spark_session)


def _tensorflow() -> None:
    from ml_assets.ml.models_keras import import_tensorflow_in_background

    thread = import_tensorflow_in_background()
    if thread is not None:
        thread.join()  # one thing at a time: the Spark start-up, then TensorFlow


def start_warm_up(resources: dict, log: Callable[[str], None]) -> threading.Thread:
    """A daemon thread that starts the Spark session (getOrCreate: the steps get the same one),
    then imports TensorFlow; the Python import lock makes a step importing it meanwhile wait."""
    tasks = [task for task in (_spark(resources), _tensorflow) if task is not None]

    def run() -> None:
        for task in tasks:
            try:
                task()
            except Exception as exc:  # the step that needs it raises it again, in its context
                log(f"warm-up: {type(exc).__name__}: {exc} (left to the step that needs it)")

    thread = threading.Thread(target=run, name="replay-warm-up", daemon=True)
    thread.start()
    return thread
