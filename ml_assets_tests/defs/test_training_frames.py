"""The training steps convert each split of one training-set version to pandas once per process."""

import pandas as pd

from ml_assets.defs.assets import training
from ml_assets.ml.training_set import HOLDOUT, SPLIT_COLUMN, TRAIN


class _Rows:
    """Stands in for a Spark DataFrame over a dataset version's files (pure logic: no Spark needed)."""

    def __init__(self, files: list[str], frame: pd.DataFrame, conversions: list[str]):
        self.files, self.frame, self.conversions, self.split = files, frame, conversions, None

    def inputFiles(self):
        return list(reversed(self.files))

    def where(self, condition: str):
        split = condition.split("'")[1]
        rows = _Rows(self.files, self.frame[self.frame[SPLIT_COLUMN] == split], self.conversions)
        rows.split = split
        return rows

    def toPandas(self):
        self.conversions.append(self.split or "all")
        return self.frame.reset_index(drop=True)


def test_each_split_of_a_version_is_converted_once_and_handed_out_as_copies():
    frame = pd.DataFrame({SPLIT_COLUMN: [TRAIN, TRAIN, HOLDOUT], "x": [1.0, 2.0, 3.0]})
    conversions: list[str] = []
    first = _Rows(["v=1/a.parquet", "v=1/b.parquet"], frame, conversions)
    holdout = training.split_frame(first, HOLDOUT)
    holdout["x"] = 0.0  # a step changing its frame does not change the next step's
    again = training.split_frame(_Rows(["v=1/b.parquet", "v=1/a.parquet"], frame, conversions), HOLDOUT)
    assert again["x"].tolist() == [3.0]
    assert training.split_frame(first, TRAIN)["x"].tolist() == [1.0, 2.0]
    assert training.training_frame(first)["x"].tolist() == [1.0, 2.0, 3.0]
    assert conversions == [HOLDOUT, TRAIN, "all"]
    # Another version (other files) is converted afresh, and the previous version's frames are dropped.
    other = pd.DataFrame({SPLIT_COLUMN: [TRAIN, HOLDOUT], "x": [5.0, 6.0]})
    assert training.split_frame(_Rows(["v=2/a.parquet"], other, conversions), HOLDOUT)["x"].tolist() == [6.0]
    assert conversions == [HOLDOUT, TRAIN, "all", HOLDOUT]
    assert all(key[0] == ("v=2/a.parquet",) for key in training._FRAMES)
