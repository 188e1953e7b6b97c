"""Which days a model trains and is judged on, and the labelled examples of those days."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml_assets.ml.clustering import CLUSTER_COLUMN
from ml_assets.ml.raw import PARTITION_COLUMN
from ml_assets.spec.model import DatasetSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SPLIT_COLUMN = "split"
TRAIN, HOLDOUT = "train", "holdout"
# Days only earlier rolling-origin folds use (training.folds.k > 1): never the published model's rows.
EARLIER = "earlier_folds"


@dataclass(frozen=True)
class TrainingWindow:
    train_days: list[str]
    holdout_days: list[str]

    @property
    def description(self) -> str:
        return (f"train {self.train_days[0]}..{self.train_days[-1]} ({len(self.train_days)} days), "
                f"holdout {self.holdout_days[0]}..{self.holdout_days[-1]} ({len(self.holdout_days)} days)")


def choose_window(labelled_days: list[str], as_of: str | None, window_days: int, holdout_days: int,
                  min_train_days: int = 7) -> TrainingWindow:
    """The holdout is the `holdout_days` ending at as_of; training is the `window_days` before it.

    Only days that have labels count; a window shorter than asked is accepted down to
    min_train_days (early in a data set's life), never below.
    """
    if not labelled_days:
        raise ValueError("no labelled days: materialize features and labels first")
    end = dt.date.fromisoformat(as_of or labelled_days[-1])
    holdout_start = end - dt.timedelta(days=holdout_days - 1)
    train_start = holdout_start - dt.timedelta(days=window_days)
    days = [dt.date.fromisoformat(d) for d in labelled_days]
    holdout = [d.isoformat() for d in days if holdout_start <= d <= end]
    train = [d.isoformat() for d in days if train_start <= d < holdout_start]
    if not holdout:
        raise ValueError(f"no labelled days in the holdout {holdout_start}..{end}")
    if len(train) < min_train_days:
        raise ValueError(
            f"only {len(train)} labelled day(s) in the training window {train_start}..{holdout_start - dt.timedelta(days=1)};"
            f" need at least {min_train_days}"
        )
    return TrainingWindow(train, holdout)


def labelled_examples(spec: DatasetSpec, features: DataFrame, labels: DataFrame, clusters: DataFrame | None,
                      window: TrainingWindow) -> DataFrame:
    """Features joined to their labels (rows without a label drop out), clusters as a slice column.

    Split: HOLDOUT on the window's holdout days, TRAIN on its training days, EARLIER on any other
    day read (the extra days of earlier folds).
    """
    from pyspark.sql import functions as F

    keys = [*spec.key_columns, PARTITION_COLUMN]
    feature_keys = [k for k in keys if k in features.columns]
    frame = features.join(labels.select(*feature_keys, spec.label.name), on=feature_keys, how="inner")
    if clusters is not None:
        frame = frame.join(clusters.select(*feature_keys, CLUSTER_COLUMN), on=feature_keys, how="left")
    else:
        frame = frame.withColumn(CLUSTER_COLUMN, F.lit(None).cast("int"))
    day = F.date_format(F.col(PARTITION_COLUMN), "yyyy-MM-dd")
    return frame.withColumn(SPLIT_COLUMN, F.when(day.isin(window.holdout_days), F.lit(HOLDOUT))
                            .when(day.isin(window.train_days), F.lit(TRAIN)).otherwise(F.lit(EARLIER)))
