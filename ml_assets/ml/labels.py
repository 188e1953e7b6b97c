"""Labels from a label feed: each day's examples joined by key with the outcomes landed so far.

The feed's day is the day an outcome landed; the labels of event day D read feed days
D .. D + max_delay_days. Each stored labels version carries a small JSON beside its Parquet files
(its coverage and a digest of its content), so monitoring and training can tell a day still filling
up from a settled one, and a re-run that found nothing new publishes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ml_assets.ml.raw import PARTITION_COLUMN
from ml_assets.spec.model import DatasetSpec
from ml_assets.storage import BlobNotFoundError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

    from ml_assets.storage import DatasetStore

LABELS_TABLE = "labels"
#: Beside the Parquet files of a labels version; '_' keeps Spark and the Parquet readers away from it.
STATS_BLOB = "_label_stats.json"
_LANDED = "__landed"
_RANK = "__rank"


@dataclass(frozen=True)
class DayLabelStats:
    """What one event day's labels hold: coverage is the share of examples whose outcome landed."""

    day: str
    examples: int
    outcomes: int
    labelled: int
    feed_days: list[str]
    digest: str = ""

    @property
    def coverage(self) -> float:
        return self.outcomes / self.examples if self.examples else 0.0

    @property
    def labelled_share(self) -> float:
        return self.labelled / self.examples if self.examples else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "coverage": round(self.coverage, 6), "labelled_share": round(self.labelled_share, 6)}


def days_after(day: str, count: int) -> list[str]:
    """day and the `count` days after it, as ISO dates."""
    first = dt.date.fromisoformat(day)
    return [(first + dt.timedelta(days=offset)).isoformat() for offset in range(count + 1)]


def feed_days_for(event_days: list[str], max_delay_days: int) -> list[str]:
    """Feed (landing) days the labels of these event days can read."""
    first, last = min(event_days), max(event_days)
    span = (dt.date.fromisoformat(last) - dt.date.fromisoformat(first)).days
    return days_after(first, span + max_delay_days)


def feed_labels(spec: DatasetSpec, examples: DataFrame, feed: DataFrame | None) -> tuple[DataFrame, DataFrame]:
    """(labels, per-day counts) of the examples' event days.

    examples: the base source's rows (key columns and the event day); feed: the label feed's rows of
    the landing days read, or None when none has landed. An outcome counts for an example when its
    keys match and it landed within [event day, event day + max_delay_days]; of several, the latest
    landed wins (a correction). The label expressions read the feed's columns. Rows excluded by
    `exclude_when` have an outcome but no label; examples without an outcome have no row at all.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    assert spec.label_feed is not None, "feed_labels needs a spec with a label_feed section"
    keys = spec.key_columns
    examples = examples.select(*keys, PARTITION_COLUMN)
    counts = examples.groupBy(PARTITION_COLUMN).agg(F.count(F.lit(1)).alias("examples"))
    label = F.coalesce(F.expr(spec.label.expression), F.lit(False)).cast("int").alias(spec.label.name)
    if feed is None:
        empty = examples.where(F.lit(False)).select(*keys, PARTITION_COLUMN, F.lit(0).cast("int").alias(spec.label.name))
        stats = counts.select(PARTITION_COLUMN, "examples", F.lit(0).cast("long").alias("outcomes"),
                              F.lit(0).cast("long").alias("labelled"))
        return empty, stats
    outcomes = feed.withColumnRenamed(PARTITION_COLUMN, _LANDED)
    delay = F.datediff(F.col(_LANDED), F.col(PARTITION_COLUMN))
    matched = (
        examples.join(outcomes, on=keys, how="inner")
        .where((delay >= 0) & (delay <= spec.label_feed.max_delay_days))
        .withColumn(_RANK, F.row_number().over(Window.partitionBy(*keys, PARTITION_COLUMN).orderBy(F.col(_LANDED).desc())))
        .where(F.col(_RANK) == 1)
    )
    excluded = F.coalesce(F.expr(spec.label.exclude_when), F.lit(False)) if spec.label.exclude_when else F.lit(False)
    matched = matched.withColumn("__excluded", excluded)
    labels = matched.where(~F.col("__excluded")).select(*keys, PARTITION_COLUMN, label)
    per_day = matched.groupBy(PARTITION_COLUMN).agg(
        F.count(F.lit(1)).alias("outcomes"), F.sum((~F.col("__excluded")).cast("long")).alias("labelled"))
    stats = counts.join(per_day, on=PARTITION_COLUMN, how="left").select(
        PARTITION_COLUMN, "examples", F.coalesce("outcomes", F.lit(0)).alias("outcomes"),
        F.coalesce("labelled", F.lit(0)).alias("labelled"))
    return labels, stats


def content_digest(rows: pd.DataFrame, keys: list[str], examples: int) -> str:
    """Digest of one day's label rows (order-free) and its example count: equal digests, equal content."""
    import pandas as pd

    ordered = rows.sort_values(keys, kind="stable").reset_index(drop=True) if len(rows) else rows
    hashed = pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes()
    return hashlib.sha256(hashed + f"|{list(rows.columns)}|{examples}".encode()).hexdigest()[:16]


def stats_key(datasets: DatasetStore, day: str) -> str | None:
    version = datasets.current(LABELS_TABLE, day)
    return None if version is None else f"{version.prefix}/{STATS_BLOB}"


def write_label_stats(datasets: DatasetStore, stats: DayLabelStats) -> str:
    """Store the stats beside the day's live labels version; returns that version."""
    version = datasets.require(LABELS_TABLE, stats.day)
    datasets.blobs.put(f"{version.prefix}/{STATS_BLOB}", json.dumps(stats.as_dict(), sort_keys=True).encode())
    return version.version


def stored_label_stats(datasets: DatasetStore, day: str) -> dict | None:
    """The stats of the day's live labels version (keys of DayLabelStats.as_dict), or None without them:
    no labels yet, labels read from the base source (no feed), or the stats not yet written."""
    key = stats_key(datasets, day)
    if key is None:
        return None
    try:
        return json.loads(datasets.blobs.get(key).decode())
    except BlobNotFoundError:
        return None


def settled_days(spec: DatasetSpec, datasets: DatasetStore, days: list[str]) -> list[str]:
    """The days whose labels can be used: all of them without a feed; with one, those whose stored
    coverage reached label_feed.min_coverage (a day still filling up holds a biased sample)."""
    if spec.label_feed is None:
        return list(days)
    settled = []
    for day in days:
        stats = stored_label_stats(datasets, day)
        if stats is not None and stats["coverage"] >= spec.label_feed.min_coverage:
            settled.append(day)
    return settled
