"""Spark transforms from raw tables to features and labels, driven by the dataset spec."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_assets.ml.raw import PARTITION_COLUMN
from ml_assets.ml.unique_keys import KeyReport, spark_duplicate_key_columns, spark_key_report
from ml_assets.spec.model import DatasetSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def joined_frame(spec: DatasetSpec, tables: dict[str, DataFrame]) -> DataFrame:
    """The base source with every declared join applied, matched within the same day."""
    frame = tables[spec.join.base]
    for join in spec.join.joins:
        keys = [*join.keys, PARTITION_COLUMN]
        right = tables[join.source].select(*keys, *join.columns).dropDuplicates(keys)
        frame = frame.join(right, on=keys, how=join.how)
    return frame


def build_features(spec: DatasetSpec, joined: DataFrame) -> DataFrame:
    """Key columns, the day, then each feature: numeric as double, categorical as string."""
    from pyspark.sql import functions as F

    # A key that is also a feature (e.g. carrier) appears once, as the feature.
    features = set(spec.features.names)
    columns = [F.col(name) for name in spec.key_columns if name not in features]
    columns.append(F.col(PARTITION_COLUMN))
    columns += [F.col(name).cast("double").alias(name) for name in spec.features.numeric]
    columns += [F.col(name).cast("string").alias(name) for name in spec.features.categorical]
    for derived in spec.features.derived:
        spark_type = "double" if derived.kind == "numeric" else "string"
        columns.append(F.expr(derived.expression).cast(spark_type).alias(derived.name))
    return joined.select(*columns)


def build_labels(spec: DatasetSpec, joined: DataFrame) -> DataFrame:
    """Key columns, the day and the 0/1 label; excluded rows get no label row at all."""
    from pyspark.sql import functions as F

    frame = joined
    if spec.label.exclude_when:
        frame = frame.where(~F.coalesce(F.expr(spec.label.exclude_when), F.lit(False)))
    label = F.coalesce(F.expr(spec.label.expression), F.lit(False)).cast("int").alias(spec.label.name)
    return frame.select(*spec.key_columns, PARTITION_COLUMN, label)


def expected_feature_types(spec: DatasetSpec) -> dict[str, str]:
    """Spark simple type names every feature column must have."""
    types = {name: "double" for name in spec.features.numeric_names}
    types.update({name: "string" for name in spec.features.categorical_names})
    return types


def schema_problems(frame: DataFrame, expected: dict[str, str]) -> list[str]:
    actual = {field.name: field.dataType.simpleString() for field in frame.schema.fields}
    problems = [f"missing column {name!r}" for name in expected if name not in actual]
    problems += [
        f"column {name!r} is {actual[name]}, expected {kind}"
        for name, kind in expected.items()
        if name in actual and actual[name] != kind
    ]
    return problems


def daily_profile(frame: DataFrame, columns: list[str],
                  keys: list[str] | None = None) -> tuple[dict[str, dict[str, float]], dict[str, KeyReport]]:
    """Per day: row count and the null rate of each column; with `keys`, also a KeyReport for each day
    where key values occur more than once (days without duplicates are absent). One Spark query."""
    from pyspark.sql import functions as F

    nulls = [f"__nulls_{i}" for i in range(len(columns))]  # a key column may also be a feature
    if keys:
        # (day, key) groups carry their rows and nulls; the day sums them and judges the keys. Rows
        # are hashed by day once: both aggregations then run without another exchange (one Spark job less).
        slim = frame.select(PARTITION_COLUMN, *keys, *[
            F.col(c).isNull().cast("long").alias(n) for c, n in zip(columns, nulls, strict=True)])
        groups = slim.repartition(PARTITION_COLUMN).groupBy(PARTITION_COLUMN, *keys).agg(
            F.count(F.lit(1)).alias("__rows"), *[F.sum(n).alias(n) for n in nulls])
        per_day = groups.groupBy(PARTITION_COLUMN).agg(
            F.sum("__rows").alias("__rows"), *[F.sum(n).alias(n) for n in nulls],
            *spark_duplicate_key_columns(keys, "__rows"))
    else:
        per_day = frame.groupBy(PARTITION_COLUMN).agg(
            F.count(F.lit(1)).alias("__rows"),
            *[F.sum(F.col(c).isNull().cast("long")).alias(n) for c, n in zip(columns, nulls, strict=True)])
    profile, duplicates = {}, {}
    for row in per_day.collect():
        rows = row["__rows"]
        day = str(row[PARTITION_COLUMN])
        profile[day] = {"rows": rows, **{c: (row[n] / rows if rows else 0.0) for c, n in zip(columns, nulls, strict=True)}}
        if keys and (report := spark_key_report(keys, row)) is not None:
            duplicates[day] = report
    return profile, duplicates
