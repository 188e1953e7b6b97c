"""What a predict request may contain, checked before any model sees it (no pandas, no Dagster).

Every rule that decides whether a request's content is acceptable lives here, so that a request
the model could not score is a 4xx naming the problem, never a 5xx:

- the content type (415 unless JSON), the version in the path (400 unless a decimal int64, checked
  before `int()` so a 4,300-digit number cannot overflow it), the request size (413 with the
  limit: `ServingLimits`);
- the JSON body and its instances, with the rules of `ml_assets.ml.models.records_to_frame` (what
  batch scoring accepts) plus the range of the flavor's floats: float64 for sklearn, float32 for
  Keras (whose SavedModel takes float32 tensors: a larger number would become infinity);
- with the model's `value_types` (its manifest, else the active spec's), each value is first read by
  the spelling rules batch uses (`ml_assets.ml.values`): "True", "1" and true for a bool feature become
  what Spark built for training ("true" / 1.0); a value batch would read differently is a 400 naming
  the feature;
- the predictions: a non-finite output (NaN, infinity) is never emitted; the request gets a 400
  naming the instance (`ml_assets.serving.answer.dump_predictions`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ml_assets.ml.values import ValueSpellingError, converter

SIGNATURE_NAME = "serving_default"

#: TF Serving's versions are int64.
MAX_VERSION = 2**63 - 1

_FLOAT64_MAX = 1.7976931348623157e308
_FLOAT32_MAX = 3.4028234663852886e38
# The smallest integers float() cannot convert: 2**1024 - 2**970 rounds up to 2**1024.
_FLOAT64_INT_LIMIT = 2**1024 - 2**970


class ApiError(Exception):
    """An answer other than 200: HTTP status and the message for {"error": ...}.

    `extra` adds fields to the JSON body; `close` ends the connection after the answer (the
    request body may not have been read to its end).
    """

    def __init__(self, status: int, message: str, *, extra: dict | None = None, close: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra
        self.close = close


@dataclass(frozen=True)
class ServingLimits:
    """Bounds on one request; beyond them the server answers 4xx instead of trying.

    max_body_bytes: largest request body in bytes; a larger one is refused with 413 as soon as
        that many bytes arrived (TF Serving has no limit of its own; a proxy usually has one).
    max_instances: most instances (rows) in one predict request, in either format; more is a
        413 naming the limit. The batcher predicts a larger request alone, in one model call,
        so this bounds the memory and time one request can take.
    body_timeout_s: seconds the server waits for the whole request body once its headers
        arrived; a body still incomplete then is answered 408 and the connection closed, so
        half-sent bodies cannot hold connections. 0 disables the timeout.
    header_timeout_s: seconds a connection may take to send a request's headers (from its first
        byte, or from the connection when it sends nothing); then the server answers 408 and
        closes it (`serving.protocol`: uvicorn itself has no such deadline). 0 disables it.
    """

    max_body_bytes: int = 64 * 1024 * 1024
    max_instances: int = 10_000
    body_timeout_s: float = 30.0
    header_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_instances"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"ServingLimits.{name} must be a positive integer, got {value!r}")
        for name in ("body_timeout_s", "header_timeout_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"ServingLimits.{name} must be >= 0 seconds, got {value!r}")


# ---------------------------------------------------------------------------- the request line


def parse_version(text: str) -> int:
    """The `{v}` of /versions/{v}: a decimal integer in int64, checked before conversion."""
    if not (text.isascii() and text.isdigit()):
        raise ApiError(400, f"version must be a non-negative integer, got {_clip(text)!r}")
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(MAX_VERSION)) or int(digits) > MAX_VERSION:
        raise ApiError(
            400,
            f"version must be at most {MAX_VERSION} (int64), got a {len(digits)}-digit number "
            f"{_clip(digits, 20)}",
        )
    return int(digits)


def check_content_type(headers: list[tuple[bytes, bytes]]) -> None:
    """415 unless the body is declared JSON (`application/json`, `application/*+json`).

    A request without a content-type is read as JSON (TF Serving's own clients send none).
    """
    for name, value in headers:
        if name.lower() != b"content-type":
            continue
        media = value.split(b";", 1)[0].strip().lower()
        if media == b"application/json" or (
            media.startswith(b"application/") and media.endswith(b"+json")
        ):
            return
        shown = value.decode("latin-1")[:80]
        raise ApiError(
            415,
            f"content-type must be application/json, got {shown!r} "
            "(with curl: -H 'content-type: application/json')",
        )


# ---------------------------------------------------------------------------- the body


@dataclass(frozen=True)
class _FloatRange:
    dtype: str
    max: float
    int_limit: int  # integers strictly inside (-int_limit, int_limit) convert to a finite dtype


_RANGES = {
    "float64": _FloatRange("float64", _FLOAT64_MAX, _FLOAT64_INT_LIMIT),
    "float32": _FloatRange("float32", _FLOAT32_MAX, int(_FLOAT32_MAX) + 1),
}

#: (feature kind, value type) -> Python types whose JSON values the spelling rules leave as they are
#: (a float NaN stays NaN: the checks below read it as missing, as the rules do).
_KEPT = {
    ("numeric", "float"): (float, int), ("numeric", "string"): (float, int), ("numeric", "text"): (float, int),
    ("numeric", "int"): (int,), ("categorical", "text"): (str, int),
}

#: The float type each model flavor computes in (`models.py`: Keras takes float32 tensors).
FLAVOR_FLOATS = {"keras": "float32", "sklearn": "float64"}


def float_max(flavor: str) -> float:
    """The largest magnitude a numeric feature may have for a model of this flavor."""
    return _RANGES[FLAVOR_FLOATS.get(flavor, "float64")].max


class RequestSchema:
    """The features one version expects, and the validation of a request against them.

    The rules are those of `ml_assets.ml.models.records_to_frame` (the batch-scoring path), so
    the server accepts what batch scoring accepts: a numeric feature is a number (int or float)
    within the flavor's float range, or null / NaN (missing); a categorical feature is a string
    (valid Unicode), an integer (its decimal string) or null (missing). Keys that are not
    features are ignored. Checking here, per request, keeps one bad request from failing the
    batch it would have joined.
    """

    def __init__(
        self,
        numeric: list[str],
        categorical: list[str],
        *,
        flavor: str = "sklearn",
        limits: ServingLimits | None = None,
        value_types: dict[str, str] | None = None,
    ):
        self.numeric = tuple(numeric)
        self.categorical = tuple(categorical)
        # (feature, read, what it is) for the features whose raw type is known: ml_assets.ml.values.
        types = value_types or {}
        # Values of the `kept` Python types are already what batch built: no call (the hot path).
        self.converters = tuple(
            (name, converter(kind, types[name]), f"{kind} feature, raw type {types[name].split('|')[0]}",
             _KEPT.get((kind, types[name]), ()))
            for kind, names in (("numeric", self.numeric), ("categorical", self.categorical))
            for name in names if name in types
        )
        self.features = self.numeric + self.categorical
        self.flavor = flavor
        self.range = _RANGES[FLAVOR_FLOATS.get(flavor, "float64")]
        self.limits = limits or ServingLimits()

    def _check_count(self, count: int, what: str) -> None:
        limit = self.limits.max_instances
        if count > limit:
            raise ApiError(
                413,
                f"request has {count} {what}; the limit is {limit} instances per request "
                "(max_instances): split it into several requests",
            )

    def records_from_instances(self, instances: Any) -> list[dict]:
        if type(instances) is not list:
            raise ApiError(
                400, f"'instances' must be a list of objects, got {json_type(instances)}"
            )
        if not instances:
            raise ApiError(400, "'instances' is empty: send at least one instance")
        self._check_count(len(instances), "instances")
        numeric, categorical = self.numeric, self.categorical
        top, int_limit = self.range.max, self.range.int_limit
        converters = self.converters
        for index, instance in enumerate(instances):
            if type(instance) is not dict:
                raise ApiError(
                    400,
                    f"instances[{index}] must be an object {{feature: value}}, "
                    f"got {json_type(instance)}",
                )
            name = ""
            try:
                for name, read, what, kept in converters:
                    value = instance[name]
                    if type(value) in kept:
                        continue
                    try:
                        instance[name] = read(value)
                    except ValueSpellingError as error:
                        raise _bad_instance(index, name, value, f"{error} ({what})") from None
                for name in numeric:
                    value = instance[name]
                    kind = type(value)
                    if kind is float:
                        # NaN fails both comparisons and is missing, as in models.py.
                        if not -top <= value <= top and value == value:
                            raise self._out_of_range(index, name, value)
                    elif kind is int:
                        if not -int_limit < value < int_limit:
                            raise self._out_of_range(index, name, value)
                    elif value is not None:
                        raise _bad_instance(index, name, value, "a number or null (DT_FLOAT)")
                for name in categorical:
                    value = instance[name]
                    kind = type(value)
                    if kind is str:
                        if not value.isascii():
                            _check_unicode(index, name, value)
                    elif value is not None and kind is not int:
                        if kind is float and value != value:  # NaN: missing, as in models.py
                            continue
                        raise _bad_instance(
                            index, name, value, "a string, an integer or null (DT_STRING)"
                        )
            except KeyError:
                missing = [feature for feature in self.features if feature not in instance]
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise ApiError(
                    400, f"instances[{index}] is missing feature '{missing[0]}'{more}"
                ) from None
        return instances

    def _out_of_range(self, index: int, name: str, value: Any) -> ApiError:
        r = self.range
        return _bad_instance(
            index,
            name,
            value,
            f"a finite number within {r.dtype} range (|x| <= {r.max:.8g}) for this "
            f"{self.flavor} model, or null",
        )

    def records_from_inputs(self, inputs: Any) -> list[dict]:
        if type(inputs) is not dict:
            raise ApiError(
                400, f"'inputs' must be an object {{feature: [values]}}, got {json_type(inputs)}"
            )
        missing = [name for name in self.features if name not in inputs]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ApiError(400, f"'inputs' is missing feature '{missing[0]}'{more}")
        size = None
        for name in self.features:
            values = inputs[name]
            if type(values) is not list:
                raise ApiError(
                    400, f"inputs['{name}'] must be a list of values, got {json_type(values)}"
                )
            if size is None:
                size = len(values)
                self._check_count(size, f"values in inputs['{name}']")
            elif len(values) != size:
                raise ApiError(
                    400,
                    f"inputs['{name}'] has {len(values)} values but inputs['{self.features[0]}'] "
                    f"has {size}: every feature needs one value per instance",
                )
        if not size:
            raise ApiError(400, "'inputs' is empty: send at least one value per feature")
        names = self.features
        columns = [inputs[name] for name in names]
        records = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        try:
            self.records_from_instances(records)
        except ApiError as error:  # name the column and index, as the client sent them
            raise ApiError(error.status, columnar_message(error.message)) from None
        return records


def columnar_message(message: str) -> str:
    """'instances[3]['x'] ...' as the columnar client sent it: "inputs['x'][3] ..."."""
    match = re.match(r"instances\[(\d+)\]\['([^']*)'\](.*)", message, re.S)
    if match is None:
        return re.sub(r"^instances\[(\d+)\]", r"row \1 of 'inputs'", message)
    index, name, rest = match.groups()
    return f"inputs['{name}'][{index}]{rest}"


def _check_unicode(index: int, name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate ("\ud800"): not a Unicode string
        raise ApiError(
            400,
            f"instances[{index}]['{name}'] must be valid Unicode text, got a string with an "
            f"unpaired surrogate \\u{ord(value[error.start]):04x} at position {error.start}",
        ) from None


def _bad_instance(index: int, name: str, value: Any, expected: str) -> ApiError:
    return ApiError(
        400, f"instances[{index}]['{name}'] must be {expected}, got {json_type(value)}"
    )


def _clip(text: str, length: int = 40) -> str:
    return text if len(text) <= length else f"{text[:length]}... ({len(text)} characters)"


def json_type(value: Any) -> str:
    """A short description of a JSON value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, int):
        if value.bit_length() < 200:
            return f"number {value}"
        text = str(value)  # at most 4,300 digits: json.loads refuses longer integers
        return f"number {text[:20]}... ({len(text.lstrip('-'))} digits)"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {json.dumps(value[:40])}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_body(body: bytes, schema: RequestSchema) -> tuple[list[dict], bool]:
    """(records, columnar?) or ApiError (400, or 413 for too many instances).

    JSON as Python reads it: `NaN` is accepted (a missing number), `Infinity` and numbers
    beyond the float range are refused by the schema, integers of more than 4,300 digits by
    the parser.
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, f"JSON Parse error: {str(error)[:200]}") from None
    if type(payload) is not dict:
        raise ApiError(
            400,
            "request body must be a JSON object with 'instances' or 'inputs', "
            f"got {json_type(payload)}",
        )
    signature = payload.get("signature_name", SIGNATURE_NAME)
    if signature != SIGNATURE_NAME:
        shown = _clip(signature, 60) if isinstance(signature, str) else json_type(signature)
        raise ApiError(
            400,
            f"unknown signature_name {shown!r}: this model has only '{SIGNATURE_NAME}'",
        )
    has_instances = "instances" in payload
    has_inputs = "inputs" in payload
    if has_instances and has_inputs:
        raise ApiError(400, "request has both 'instances' and 'inputs': send exactly one of them")
    if has_instances:
        return schema.records_from_instances(payload["instances"]), False
    if has_inputs:
        return schema.records_from_inputs(payload["inputs"]), True
    raise ApiError(
        400, "request has neither 'instances' (row format) nor 'inputs' (columnar format)"
    )


__all__ = [
    "MAX_VERSION",
    "SIGNATURE_NAME",
    "ApiError",
    "RequestSchema",
    "ServingLimits",
    "check_content_type",
    "columnar_message",
    "float_max",
    "json_type",
    "parse_body",
    "parse_version",
]
