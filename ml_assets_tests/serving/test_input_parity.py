"""One input parser: the same raw spellings through batch (raw CSV -> Spark features) and the server.

Every feature type the spec has (bool, int, float, string, date, timestamp; numeric and categorical)
in every spelling the CSV reader accepts must reach the model as the same value both ways; a spelling
batch rejects must be a 400 naming the feature; and the served predictions equal batch scoring's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from starlette.testclient import TestClient

from ml_assets.ml.features import build_features
from ml_assets.ml.models import (
    FeatureColumns,
    SklearnParams,
    records_to_frame,
    save_model,
    train_sklearn,
)
from ml_assets.ml.raw import PARTITION_COLUMN, parse_csv
from ml_assets.ml.raw_folder import MalformedBlobError
from ml_assets.ml.values import feature_value_types, spark_double_text
from ml_assets.serving import ModelRegistry, create_app
from ml_assets.serving.inputs import ApiError, RequestSchema
from ml_assets.spec.model import parse_spec
from ml_assets.storage import LocalBlobStore
from ml_assets.storage.model_store import ModelStore

pytestmark = pytest.mark.spark

ZONE = "Europe/Berlin"
# Raw CSV spellings each column's reader accepts (a column cycles through its list row by row).
SPELLINGS = {
    "nb": ["True", "False", "true", "false", "TRUE", "FALSE", "1", "0", "", "NA"],
    "ni": ["5", "-5", " 7", "05", "0x10", "", "NA", "12", "9223372036854775807"],
    "nf": ["1.5", "+1.5", ".5", "5.", "1e3", "1E-4", "", "nan", "NaN", "-0.0", "12345678.9"],
    "cb": ["True", "False", "true", "false", "TRUE", "FALSE", "1", "0", "", "null"],
    "ci": ["5", "-5", " 7", "05", "0x10", "", "NA", "12"],
    "cf": ["1.5", "5.", "1e7", "1E-4", "0.001", "", "NA", "123456789.123", "-0.0"],
    "cs": ["web", "NA", "", " a ", "None", "null", "5", "N/A", "app"],
    "cd": ["2013-01-01", "", "NA", "2024-02-29"],
    # Naive: local time in the spec's zone (one file is all naive or all with offsets).
    "ct": ["2024-03-01 10:00:00", "2024-03-01T10:00:00.5", "2024-03-01 23:30:00", "", "2024-07-01 02:00:00"],
}
# JSON values a client may send instead, and the CSV spelling each must read like.
NATIVE = {
    "nb": [(True, "true"), (False, "false"), (1, "1"), (0, "0"), (None, "")],
    "ni": [(5, "5"), (5.0, "5"), (None, "")],
    "nf": [(1.5, "1.5"), (1000, "1e3"), (float("nan"), "nan"), (None, "")],
    "cb": [(True, "True"), (False, "False"), (1, "1"), (None, "")],
    "ci": [(16, "0x10"), (5.0, "5"), (None, "")],
    "cf": [(10_000_000, "1e7"), (1.5, "1.5"), (None, "")],
    "cs": [(5, "5"), (None, "")],
}
# Spellings the CSV reader refuses for the column's type: the server must refuse them too.
REJECTED = {
    "nb": ["yes", "tRUE", "2", "1.0"], "cb": ["t", " true"], "ni": ["5.5", "+5", "1e3", "1_000"],
    "ci": ["five"], "nf": ["1,5", "0x10", "True"], "cf": ["1_0"], "cd": ["2013-1-1", "01/02/2013"],
    "ct": ["yesterday"],
}
SPEC = parse_spec({
    "name": "parity", "start_date": "2024-03-01", "timezone": ZONE,
    "sources": {"s": {"prefix": "raw/s", "format": "csv", "timestamp_column": "ts", "columns": {
        "id": "int", "ts": "timestamp", "nb": "bool", "ni": "int", "nf": "float", "cb": "bool", "ci": "int",
        "cf": "float", "cs": "string", "cd": "date", "ct": "timestamp", "y": "int"}}},
    "key_columns": ["id"],
    "label": {"expression": "y = 1"},
    "features": {"numeric": ["nb", "ni", "nf"], "categorical": ["cb", "ci", "cf", "cs", "cd", "ct"]},
})
FEATURES = [*SPEC.features.numeric, *SPEC.features.categorical]
ROWS = 120


def _csv(rows: list[dict[str, str]]) -> bytes:
    names = list(SPEC.sources["s"].columns)
    lines = [",".join(names)] + [",".join(json.dumps(row[n]) if row[n] else "" for n in names) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def _rows() -> list[dict[str, str]]:
    rng = np.random.default_rng(0)
    rows = []
    for index in range(ROWS):
        row = {name: values[index % len(values)] for name, values in SPELLINGS.items()}
        row.update(id=str(index), ts="2024-03-01 12:00:00", y=str(int(rng.random() < 0.5)))
        rows.append(row)
    return rows


def _batch(spark, tmp_path, rows: list[dict[str, str]]) -> list[dict]:
    """The rows as the feature pipeline builds them: raw CSV parser -> Parquet -> Spark features."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    source = SPEC.sources["s"]
    table = parse_csv(_csv(rows), source, "parity.csv", SPEC.zone)
    table = table.append_column(PARTITION_COLUMN, pa.array([dt.date(2024, 3, 1)] * table.num_rows, pa.date32()))
    path = tmp_path / "raw.parquet"
    pq.write_table(table, path)
    frame = build_features(SPEC, spark.read.parquet(str(path))).orderBy("id")
    return [row.asDict() for row in frame.collect()]


def _served(instances: list[dict]) -> list[dict]:
    schema = RequestSchema(SPEC.features.numeric, SPEC.features.categorical, value_types=feature_value_types(SPEC))
    return schema.records_from_instances([dict(instance) for instance in instances])


def _same(served, batch) -> bool:
    if isinstance(served, float) and served != served:
        served = None  # NaN and null are both missing to the model (records_to_frame)
    if batch is None or (isinstance(batch, float) and batch != batch):
        return served is None
    if isinstance(batch, float):
        return served is not None and float(served) == batch and str(float(served)) == str(batch)  # -0.0 too
    return served == batch


@pytest.fixture(scope="module")
def batch_rows(spark_resource, tmp_path_factory):
    return _batch(spark_resource.spark_session, tmp_path_factory.mktemp("parity"), _rows())


def test_every_spelling_reaches_the_model_as_batch_built_it(batch_rows):
    rows = _rows()
    served = _served([{name: row[name] for name in FEATURES} for row in rows])
    for index, (record, built) in enumerate(zip(served, batch_rows, strict=True)):
        for name in FEATURES:
            assert _same(record[name], built[name]), (name, rows[index][name], record[name], built[name])
    # The spellings do differ in batch: "True"/"1" and "false"/"0" are one category each, Spark's text.
    assert {row["cb"] for row in batch_rows} == {"true", "false", None}
    assert {row["ct"] for row in batch_rows} >= {"2024-03-01 09:00:00", "2024-03-01 09:00:00.5", "2024-07-01 00:00:00"}


def test_json_values_read_like_their_csv_spelling():
    for name, pairs in NATIVE.items():
        natives = _served([{**dict.fromkeys(FEATURES), name: value} for value, _ in pairs])
        texts = _served([{**dict.fromkeys(FEATURES), name: text} for _, text in pairs])
        for (value, text), native, spelled in zip(pairs, natives, texts, strict=True):
            assert _same(native[name], spelled[name]), (name, value, text)


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_a_spelling_batch_refuses_is_a_400_naming_the_feature(name):
    base = _rows()[0]
    for text in REJECTED[name]:
        with pytest.raises(MalformedBlobError, match=repr(name)):
            parse_csv(_csv([{**base, name: text}]), SPEC.sources["s"], "bad.csv", SPEC.zone)
        with pytest.raises(ApiError) as raised:
            _served([{**{n: base[n] for n in FEATURES}, name: text}])
        assert raised.value.status == 400 and f"['{name}']" in raised.value.message, raised.value.message


def test_spark_double_text_is_sparks_cast(spark):
    values = [5.0, 0.1, 1e7, 9999999.0, 1e-3, 1e-4, 123456789.123, 1e20, -0.0, 1.5e-10, 0.30000000000000004, -2.5e-7]
    frame = spark.createDataFrame([(v,) for v in values], "x double").selectExpr("x", "CAST(x AS STRING) AS s")
    assert [spark_double_text(r.x) for r in frame.collect()] == [r.s for r in frame.collect()]


def test_served_predictions_equal_batch_scoring(batch_rows, tmp_path):
    columns = FeatureColumns(list(SPEC.features.numeric), list(SPEC.features.categorical))
    frame = records_to_frame([{n: row[n] for n in FEATURES} for row in batch_rows], columns)
    labels = np.array([int(row["cb"] == "true" or (row["ni"] or 0) > 6) for row in batch_rows])
    model = train_sklearn(frame, labels, columns, SklearnParams(max_iter=20, early_stopping=False), seed=0)
    artifact = tmp_path / "artifact"
    save_model(model, artifact)
    store = ModelStore(LocalBlobStore(tmp_path / "blobs"), tmp_path / "cache")
    store.publish("parity", artifact, {"flavor": "sklearn", "columns": {"numeric": columns.numeric,
               "categorical": columns.categorical}, "value_types": feature_value_types(SPEC)})
    store.promote("parity", 1, expected=None, reason="test")
    rows = _rows()
    with TestClient(create_app(ModelRegistry(store, "parity"), poll_interval=0)) as client:
        response = client.post("/v1/models/parity:predict",
                               json={"instances": [{n: row[n] for n in FEATURES} for row in rows]})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], model.predict_proba(frame), rtol=0, atol=1e-12)
    # The model splits on cb, so its "True"/"TRUE"/"1" rows scoring like its "true" rows is the parser's doing.
    by_spelling = {}
    for row, prediction in zip(rows, response.json()["predictions"], strict=True):
        by_spelling.setdefault(row["cb"], set()).add(round(prediction, 9))
    assert by_spelling["True"] == by_spelling["TRUE"] == by_spelling["1"] == by_spelling["true"]
    assert min(by_spelling["false"]) < min(by_spelling["true"])
