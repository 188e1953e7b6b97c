"""Hypothesis strategies for hostile predict requests: path, content type and body bytes.

A request is built around a good instance (a real held-out flights row) so that most bodies get
far into validation: each feature is kept or replaced by a hostile value (numbers at and beyond
the float64 / float32 limits, NaN and infinities, huge integers, booleans, lone surrogates,
nested values), keys are dropped or added, the row and columnar formats are mixed up, and some
bodies are arbitrary JSON, random bytes or a valid body with bytes damaged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import strategies as st

FLOAT32_MAX = 3.4028234663852886e38
FLOAT64_INT_LIMIT = 2**1024 - 2**970  # the smallest integer float() cannot convert

_EDGES = [
    0,
    -0.0,
    1e-320,
    FLOAT32_MAX,
    -FLOAT32_MAX,
    3.4028235677973366e38,  # just above float32's maximum
    1.7976931348623157e308,
    -1.7976931348623157e308,
    2**63,
    2**64 + 1,
    2**128,
    FLOAT64_INT_LIMIT - 1,
    FLOAT64_INT_LIMIT,
    -FLOAT64_INT_LIMIT,
    2**1024,
    10**400,
    float("nan"),
    float("inf"),
    float("-inf"),
]

_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)
)
ANY_JSON = st.recursive(
    _JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)

NUMBERS = st.one_of(
    st.sampled_from(_EDGES),
    st.floats(),  # NaN and infinities included
    st.floats(width=32),
    st.integers(min_value=-(2**1100), max_value=2**1100),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.none(),
)
TEXTS = st.one_of(st.text(max_size=12), st.sampled_from(["", "\ud800", "A\udfff", "\x00", "JFK"]))
WEIRD = st.one_of(
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
NUMERIC_VALUES = st.one_of(NUMBERS, TEXTS, WEIRD)
CATEGORICAL_VALUES = st.one_of(TEXTS, NUMBERS, WEIRD)

# Mostly JSON (so that bodies reach validation), sometimes none, sometimes not JSON (415).
CONTENT_TYPES = st.sampled_from(
    ["application/json"] * 12
    + ["application/json; charset=utf-8", "application/problem+json", None, None]
    + ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)


@dataclass(frozen=True)
class Request:
    path: str
    content_type: str | None
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.content_type is None else {"content-type": self.content_type}


def _dumps(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def instances(draw, good: dict, numeric: list[str], categorical: list[str]) -> dict:
    """The good row with some features replaced by hostile values, some dropped, extras added."""
    instance = dict(good)
    for name in numeric:
        if draw(st.integers(0, 11)) == 0:
            instance[name] = draw(NUMERIC_VALUES)
    for name in categorical:
        if draw(st.integers(0, 11)) == 0:
            instance[name] = draw(CATEGORICAL_VALUES)
    if draw(st.integers(0, 15)) == 0:
        instance.pop(draw(st.sampled_from([*numeric, *categorical])))
    if draw(st.integers(0, 7)) == 0:
        instance[draw(st.text(max_size=6))] = draw(ANY_JSON)
    return instance


@st.composite
def bodies(draw, good: dict, numeric: list[str], categorical: list[str]) -> bytes:
    kind = draw(st.integers(0, 19))
    rows = st.lists(instances(good, numeric, categorical), min_size=1, max_size=4)
    if kind <= 10:  # row format, sometimes with a non-object row or a signature name
        payload: dict = {"instances": draw(rows)}
        if draw(st.integers(0, 9)) == 0:
            payload["instances"].append(draw(ANY_JSON))
        if draw(st.integers(0, 9)) == 0:
            payload["signature_name"] = draw(st.one_of(st.just("serving_default"), ANY_JSON))
        return _dumps(payload)
    if kind <= 14:  # columnar format, sometimes with ragged columns
        chosen = draw(rows)
        columns = {name: [row.get(name) for row in chosen] for name in good}
        if draw(st.integers(0, 5)) == 0:
            name = draw(st.sampled_from(sorted(columns)))
            columns[name] = draw(st.one_of(st.lists(NUMBERS, max_size=3), ANY_JSON))
        return _dumps({"inputs": columns})
    if kind == 15:
        return _dumps(draw(ANY_JSON))
    if kind == 16:
        return draw(st.binary(max_size=200))
    if kind == 17:  # an integer of thousands of digits, written out
        digits = draw(st.integers(300, 5000))
        return b'{"instances": [' + _dumps(good)[:-1] + b', "distance": ' + b"9" * digits + b"}]}"
    # a valid body with a few bytes damaged
    body = bytearray(_dumps({"instances": [good, good]}))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(body) - 1))
        body[position] = draw(st.sampled_from(b'{}[]",:0123456789.-eEtruanlfINxy \\'))
    return bytes(body)


VERSIONS = st.one_of(
    st.just("1"),
    st.just("0001"),
    st.integers(0, 2**70).map(str),
    st.integers(4290, 4400).map(lambda n: "9" * n),
    st.sampled_from(["-1", "1.5", "\u0663", "x", "1e3"]),
)


@st.composite
def requests(draw, name: str, good: dict, numeric: list[str], categorical: list[str]) -> Request:
    """Mostly the champion's :predict; sometimes a version or label path."""
    where = draw(st.integers(0, 9))
    if where <= 6:
        path = f"/v1/models/{name}:predict"
    elif where <= 8:
        path = f"/v1/models/{name}/versions/{draw(VERSIONS)}:predict"
    else:
        path = f"/v1/models/{name}/labels/champion:predict"
    return Request(path, draw(CONTENT_TYPES), draw(bodies(good, numeric, categorical)))
