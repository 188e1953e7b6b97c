"""The 200 body of a predict request, and the 400 for a prediction JSON cannot carry (NaN, infinity)."""

from __future__ import annotations

import json

from ml_assets.serving.inputs import ApiError, RequestSchema


def dump_predictions(
    probabilities: list[float], records: list[dict], schema: RequestSchema, columnar: bool
) -> bytes:
    """The 200 body, strict JSON; a non-finite prediction is a 400 naming its instance.

    Rule: NaN and infinities are never emitted (they are not JSON). A model gives one when the
    arithmetic overflows, e.g. a Keras model (float32) fed numbers near the float32 maximum.
    """
    try:
        text = json.dumps(probabilities, allow_nan=False)
    except ValueError:
        index = next(i for i, p in enumerate(probabilities) if p != p or p in (_INF, -_INF))
        raise ApiError(400, _non_finite_message(probabilities[index], index, records, schema,
                                                columnar)) from None
    key = b'{"outputs":' if columnar else b'{"predictions":'
    return key + text.encode() + b"}"


_INF = float("inf")


def _non_finite_message(
    value: float, index: int, records: list[dict], schema: RequestSchema, columnar: bool
) -> str:
    record = records[index]
    sizes = [
        (abs(v), name)
        for name in schema.numeric
        if type(v := record[name]) in (int, float) and v == v
    ]
    largest = max(sizes, default=None)
    hint = (
        f"; its largest number is '{largest[1]}' = {record[largest[1]]!r}: send values nearer "
        "the training range"
        if largest
        else ""
    )
    where = f"row {index} of 'inputs'" if columnar else f"instances[{index}]"
    return (
        f"{where}: the {schema.flavor} model's output is {value!r} (not a number JSON can "
        f"carry) for this instance, so no prediction is returned{hint}"
    )


__all__ = ["dump_predictions"]
