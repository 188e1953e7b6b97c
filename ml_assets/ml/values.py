"""One set of value-spelling rules for batch and serving (no pandas, no Dagster; pyarrow only for timestamps).

Batch reads raw CSV with pyarrow (`ml_assets.ml.raw`) and builds features with Spark
(`ml_assets.ml.features`: numeric features cast to double, categorical ones to string). The serving
app gets the same feature values as JSON. This module says, for each feature, which JSON values mean
what batch would have built from the same spelling in the raw file, and turns them into that value:

- missing: JSON null, NaN, or a string the CSV reader reads as null (NULL_VALUES: "", "NA", "null",
  "NaN", "N/A", ...), for every type (a CSV string column reads them as null too);
- bool: true/false, 1/0, and the CSV reader's spellings TRUE_VALUES / FALSE_VALUES ("True", "true",
  "TRUE", "1" / "False", ...). A numeric feature gets 1.0 / 0.0, a categorical one Spark's "true" / "false";
- int: an integer, an integral float (5.0), or its text as the CSV reader reads it ("05", " 5", "0x10");
  a categorical int feature gets its decimal string ("5");
- float: a number, or its text as the CSV reader reads it ("1e3", " .5", "inf"); a categorical float
  feature gets Spark's text of the double ("5.0", "1.0E7");
- string (a CSV string column): text as sent, integers as their decimal text; "text" (a Parquet string
  column or a derived categorical feature): the same, without the CSV null spellings;
- date: "YYYY-MM-DD" text; timestamp: ISO 8601 text (naive = the spec's zone, ml_assets.ml.timestamps),
  as Spark's UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]" for a categorical feature.

Anything else is a ValueSpellingError saying what the feature takes (the server answers 400 naming the
instance and the feature): a value batch would read differently is never scored silently.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml_assets.spec.model import DatasetSpec

#: pyarrow.csv.ConvertOptions() defaults, the raw CSV reader's (ml_assets.ml.raw) spellings.
TRUE_VALUES = frozenset({"1", "True", "TRUE", "true"})
FALSE_VALUES = frozenset({"0", "False", "FALSE", "false"})
NULL_VALUES = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                         "1.#QNAN", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"})
#: What a feature's values are: its raw column's type (spec ColumnType) or "text" (no CSV null spellings).
VALUE_TYPES = ("bool", "int", "float", "string", "text", "date", "timestamp")

_INT = re.compile(r"^\s*(-?)(?:0[xX]([0-9a-fA-F]+)|(\d+))\s*$")
_FLOAT = re.compile(r"^\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)\s*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INT64 = 2**63


class ValueSpellingError(ValueError):
    """A value a feature does not take; the message says what it takes (the caller names the feature)."""


Convert = Callable[[Any], Any]


def feature_value_types(spec: DatasetSpec) -> dict[str, str]:
    """Each feature's value type: its raw column's type; "text" for Parquet strings and derived categoricals.

    Stored in a model's manifest (`value_types`) so the server reads requests as batch built the features.
    """
    origin: dict[str, tuple[str, str]] = {}
    base = spec.sources[spec.join.base]
    for column, kind in base.columns.items():
        origin[column] = (str(kind), base.format)
    for join in spec.join.joins:
        source = spec.sources[join.source]
        for column in join.columns:
            origin[column] = (str(source.columns[column]), source.format)
    types = {}
    for name in spec.features.numeric + spec.features.categorical:
        kind, file_format = origin[name]
        types[name] = "text" if kind == "string" and file_format != "csv" else kind
    for derived in spec.features.derived:
        types[derived.name] = "float" if derived.kind == "numeric" else "text"
    zone = spec.timezone
    return {name: f"timestamp|{zone}" if kind == "timestamp" else kind for name, kind in types.items()}


def converter(kind: str, value_type: str) -> Convert:
    """The function reading one JSON value of a feature ("numeric" or "categorical") of this value type."""
    base, _, zone = value_type.partition("|")
    if base not in VALUE_TYPES:
        raise ValueError(f"unknown value type {value_type!r}; known: {list(VALUE_TYPES)}")
    table = _NUMERIC if kind == "numeric" else _CATEGORICAL
    if base not in table:
        raise ValueError(f"a {kind} feature of raw type {base} is not supported by the serving rules")
    if base == "timestamp":
        return lambda value: table[base](value, zone or "UTC")
    return table[base]


# ---------------------------------------------------------------------------- spellings


def _missing(value: Any) -> bool:
    if value is None:
        return True
    kind = type(value)
    return (kind is float and value != value) or (kind is str and value in NULL_VALUES)


def read_bool(value: Any) -> bool | None:
    kind = type(value)
    if kind is bool:
        return value
    if kind is str:
        if value in TRUE_VALUES:
            return True
        if value in FALSE_VALUES:
            return False
    elif kind is int and value in (0, 1):
        return value == 1
    if _missing(value):
        return None
    raise ValueSpellingError("true/false, 1/0, one of the CSV spellings True/true/TRUE/False/false/FALSE, or null")


def read_int(value: Any) -> int | None:
    kind = type(value)
    if kind is int:
        number = value
    elif kind is float and value == value and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif kind is str and (match := _INT.match(value)):
        sign, hexa, decimal = match.groups()
        number = int(hexa, 16) if hexa else int(decimal)
        number = -number if sign else number
    elif _missing(value):
        return None
    else:
        raise ValueSpellingError("an integer (or its decimal text) or null")
    if not -_INT64 <= number < _INT64:
        raise ValueSpellingError("an integer within int64 or null")
    return number


def read_float(value: Any) -> float | int | None:
    kind = type(value)
    if kind is float or kind is int:
        return None if value != value else value
    if kind is str:
        if _FLOAT.match(value):
            return float(value)
        if value in NULL_VALUES:
            return None
    elif value is None:
        return None
    raise ValueSpellingError("a number (or its text, e.g. \"1.5\", \"1e3\") or null")


def read_date(value: Any) -> str | None:
    if type(value) is str and _DATE.match(value):
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    elif _missing(value):
        return None
    raise ValueSpellingError("a date as YYYY-MM-DD text or null")


def read_timestamp(value: Any, zone: str) -> dt.datetime | None:
    """A UTC datetime: ISO 8601 text, naive read in `zone` (the raw parser's rules), or null."""
    if _missing(value):
        return None
    if type(value) is not str:
        raise ValueSpellingError("an ISO 8601 timestamp text or null")
    import pyarrow as pa

    from ml_assets.ml.timestamps import to_instants

    try:
        return to_instants(pa.array([value]), "iso", zone)[0].as_py()
    except ValueError:  # TimestampValueError
        raise ValueSpellingError(f"an ISO 8601 timestamp text (naive: {zone} time) or null") from None


def spark_double_text(value: float) -> str:
    """Spark's CAST(double AS STRING) (Java's Double.toString): 5.0, 0.001, 1.0E7, 1.0E-4, Infinity.

    The digits are the shortest that read back to the same double (Python's repr; Java 17 agrees on all
    but rare values with 17 significant digits).
    """
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1, value) < 0 else "0.0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    text = "".join(map(str, digits))
    point = len(text) + exponent  # the value is 0.<text> x 10**point
    minus = "-" if sign else ""
    if -2 <= point <= 7:  # 1e-3 <= |value| < 1e7: plain decimal with at least one fractional digit
        if point <= 0:
            return f"{minus}0.{'0' * -point}{text}"
        whole, fraction = text[:point].ljust(point, "0"), text[point:]
        return f"{minus}{whole}.{fraction or '0'}"
    return f"{minus}{text[0]}.{text[1:] or '0'}E{point - 1}"


def spark_timestamp_text(instant: dt.datetime) -> str:
    """Spark's CAST(timestamp AS STRING) in the UTC session zone: 2013-01-01 05:00:00[.5]."""
    text = instant.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    if instant.microsecond:
        text += f".{instant.microsecond:06d}".rstrip("0")
    return text


def _float_of(read: Callable[[Any], Any]) -> Convert:
    def convert(value: Any) -> float | None:
        read_value = read(value)
        return None if read_value is None else float(read_value)
    return convert


def _text(value: Any, nulls: bool) -> str | None:
    kind = type(value)
    if kind is str:
        return None if nulls and value in NULL_VALUES else value
    if kind is int:
        return str(value)
    if value is None or (kind is float and value != value):
        return None
    raise ValueSpellingError("a string, an integer or null")


def _text_of(read: Callable[[Any], Any], show: Callable[[Any], str]) -> Convert:
    def convert(value: Any) -> str | None:
        read_value = read(value)
        return None if read_value is None else show(read_value)
    return convert


def _numeric_float(value: Any) -> float | int | None:
    return read_float(value)


_NUMERIC: dict[str, Any] = {
    "bool": _float_of(read_bool),
    "int": read_int,
    "float": _numeric_float,
    "string": _numeric_float,  # Spark casts the text to double
    "text": _numeric_float,
}
_CATEGORICAL: dict[str, Any] = {
    "bool": _text_of(read_bool, lambda b: "true" if b else "false"),
    "int": _text_of(read_int, str),
    "float": _text_of(read_float, lambda f: spark_double_text(float(f))),
    "string": lambda value: _text(value, nulls=True),
    "text": lambda value: _text(value, nulls=False),
    "date": read_date,
    "timestamp": lambda value, zone: None if (t := read_timestamp(value, zone)) is None else spark_timestamp_text(t),
}
