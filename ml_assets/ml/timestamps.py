"""How timestamps are read, one set of rules for landing files and parsing landed blobs (Arrow, no Dagster).

A source declares `timestamp_format` (spec/sources.py):

- ``iso`` (default): ISO 8601, ``2013-01-01T05:00:00Z``, ``2013-01-01 05:00:00.392-05:00``, ``...-0500``,
  or without an offset (``2018-01-04 00:04:43.392``, ``2018-01-04``): a naive value is a wall-clock time in
  the spec's timezone. One column is all naive or all with offsets: a mix is refused (a cut-short offset is
  the usual cause, so the row is named).
- ``epoch_s`` / ``epoch_ms``: numbers (or numeric text) of seconds / milliseconds since 1970-01-01 UTC.
- a strftime pattern such as ``%d/%m/%Y %H:%M`` (Arrow's strptime: no fractional seconds); local time in the
  spec's timezone unless the pattern has ``%z``.

Naive local times that a DST change makes ambiguous (clocks go back: 01:30 happens twice) or nonexistent
(clocks go forward: 02:30 never happens) follow the source's `ambiguous_times` (earliest | latest | reject,
default earliest: the first of the two instants) and `nonexistent_times` (shift_forward | reject, default
shift_forward: to the first instant after the gap, 02:30 -> 03:00). Rejections raise TimestampValueError
naming the row.

pyarrow is imported inside the functions: ml/raw.py imports this module and the code location imports it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ml_assets.spec.sources import NAMED_TIMESTAMP_FORMATS

if TYPE_CHECKING:
    import pyarrow as pa

ISO, EPOCH_S, EPOCH_MS = NAMED_TIMESTAMP_FORMATS
#: An ISO value with a zone offset ends in a time then Z, +HH, +HHMM or +HH:MM (a date's "-04" is no offset).
_OFFSET = r"\d:\d\d(?::\d\d(?:[.,]\d+)?)?\s*(?:[Zz]|[+-]\d\d(?::?\d\d)?)$"
_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
#: Epoch values above this are milliseconds (1e11 s is the year 5138; 1e11 ms is March 1973).
_MS_ABOVE = 1e11
#: Patterns `detect_timestamp_format` tries when values are neither ISO nor numbers, in order.
COMMON_PATTERNS = (
    "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d",
    "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%m/%d/%Y",
    "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y",
    "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y",
    "%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%d-%m-%Y",
    "%Y%m%d%H%M%S", "%Y%m%d",
    "%d %b %Y %H:%M:%S", "%d %b %Y", "%b %d %Y %H:%M:%S", "%b %d, %Y",
)
AMBIGUOUS_RULES = {"earliest": "earliest", "latest": "latest", "reject": "raise"}
NONEXISTENT_RULES = {"shift_forward": "latest", "reject": "raise"}


class TimestampValueError(ValueError):
    """A value the rules do not read; `row` is 0-based within the array given, `value` its text."""

    def __init__(self, row: int, value: Any, problem: str):
        self.row, self.value, self.problem = row, value, problem
        super().__init__(f"invalid value {value!r} ({problem})" if value is not None else problem)

    def describe(self, column: str, row_offset: int = 0) -> str:
        """`column 'x' (data row N): ...`, the wording every raw/landing error uses."""
        return f"column {column!r} (data row {self.row + 1 + row_offset}): {self}"


def to_instants(values, fmt: str, zone, ambiguous: str = "earliest", nonexistent: str = "shift_forward"):
    """The values as timestamp[us, UTC] by the rules above; nulls stay null. Raises TimestampValueError."""
    import pyarrow as pa

    values = _one_array(values)
    zone_key = getattr(zone, "key", zone)
    kind = values.type
    if pa.types.is_null(kind):
        return pa.nulls(len(values), pa.timestamp("us", tz="UTC"))
    if pa.types.is_timestamp(kind):
        if kind.tz is None:
            return _assume_local(values.cast(pa.timestamp("us")), zone_key, ambiguous, nonexistent, values)
        return values.cast(pa.timestamp("us", tz="UTC"))
    if pa.types.is_date(kind):
        return _assume_local(values.cast(pa.timestamp("us")), zone_key, ambiguous, nonexistent, values)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        if fmt not in (EPOCH_S, EPOCH_MS):
            raise TimestampValueError(0, None, f"numbers, but timestamp_format is {fmt!r}: declare epoch_s or "
                                               "epoch_ms")
        return _from_epoch(values, fmt)
    if pa.types.is_dictionary(kind) or pa.types.is_large_string(kind):
        values = values.cast(pa.string())
    if not pa.types.is_string(values.type):
        raise TimestampValueError(0, None, f"values of type {kind} are not timestamps")
    if fmt == ISO:
        return _from_iso(values, zone_key, ambiguous, nonexistent)
    if fmt in (EPOCH_S, EPOCH_MS):
        return _from_epoch(_numbers_of(values, fmt), fmt)
    return _from_pattern(values, fmt, zone_key, ambiguous, nonexistent)


def to_dates(values, fmt: str = ISO):
    """A `date` column's values as date32 (ISO YYYY-MM-DD, or a strftime pattern); TimestampValueError."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = _one_array(values)
    if pa.types.is_date(values.type):
        return values.cast(pa.date32())
    if pa.types.is_timestamp(values.type):
        return pc.cast(values if values.type.tz is None else pc.local_timestamp(values), pa.date32())
    values = values.cast(pa.string())
    if fmt == ISO:
        parsed = cast_or_null(values, pa.date32())
    else:
        parsed = pc.cast(pc.strptime(values, format=fmt, unit="s", error_is_null=True), pa.date32())
    _first_unread(values, parsed, f"not a date in {'YYYY-MM-DD' if fmt == ISO else repr(fmt)}")
    return parsed


def local_dates(instants, zone):
    """date32 of each instant in the zone: the day a row belongs to."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(pc.local_timestamp(instants.cast(pa.timestamp("us", tz=getattr(zone, "key", zone)))),
                   pa.date32())


def format_instants(instants, fmt: str, zone):
    """Text the same rules read back to the same instants (landed CSV blobs): the inverse of to_instants.

    iso writes local time with its offset (``2013-01-01T05:00:00-0500``); fractions only when present.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    zone_key = getattr(zone, "key", zone)
    instants = _one_array(instants).cast(pa.timestamp("us", tz="UTC"))
    micros = instants.cast(pa.int64())
    if fmt in (EPOCH_S, EPOCH_MS):
        per_unit = 1_000_000 if fmt == EPOCH_S else 1_000
        whole = pc.all(pc.equal(pc.multiply(pc.divide(micros, per_unit), per_unit), micros)).as_py()
        if whole is not False:
            return pc.divide(micros, per_unit).cast(pa.string())
        return pc.divide(micros.cast(pa.float64()), float(per_unit)).cast(pa.string())
    if fmt == ISO:
        unit = _coarsest_unit(micros)
        # Naive local text plus its offset: Arrow formats tz-aware values one zone lookup at a time
        # (~2 us each); this way is ~20x faster and offsets take a few distinct values.
        local = pc.local_timestamp(instants.cast(pa.timestamp(unit, tz=zone_key), safe=False))
        text = pc.utf8_replace_slice(local.cast(pa.string()), 10, 11, "T")
        seconds = pc.divide(pc.subtract(local.cast(pa.timestamp("us")).cast(pa.int64()), micros), 1_000_000)
        offsets = pc.unique(seconds)
        names = pa.array([_offset_text(value) for value in offsets.to_pylist()], pa.string())
        return pc.binary_join_element_wise(text, pc.take(names, pc.index_in(seconds, value_set=offsets)), "")
    local = instants.cast(pa.timestamp("s", tz=zone_key), safe=False)
    # strftime is slow per value: format each distinct instant once.
    distinct = pc.unique(local)
    return pc.take(pc.strftime(distinct, format=fmt), pc.index_in(local, value_set=distinct))


def _offset_text(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    sign, seconds = ("-" if seconds < 0 else "+"), abs(seconds)
    return f"{sign}{seconds // 3600:02d}{seconds % 3600 // 60:02d}"


def detect_timestamp_format(values: Sequence[Any] | Any) -> str:
    """The timestamp_format that reads every non-empty value: iso, epoch_s, epoch_ms or a common pattern.

    For `spec init`: numbers above 1e11 are milliseconds; day-first vs month-first patterns are told apart
    by the values (when every value reads both ways, month-first wins: it comes first in COMMON_PATTERNS).
    Raises ValueError naming a value no rule reads.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(
        [None if v is None or (isinstance(v, str) and not v.strip()) else v for v in values])
    array = _one_array(array).drop_null()
    if len(array) == 0:
        raise ValueError("no timestamp values to detect a format from")
    if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        return ISO
    if pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
        return EPOCH_MS if pc.max(pc.abs(array)).as_py() > _MS_ABOVE else EPOCH_S
    text = pc.utf8_trim_whitespace(array.cast(pa.string()))
    if pc.all(pc.match_substring_regex(text, _NUMBER.pattern)).as_py():
        return detect_timestamp_format(text.cast(pa.float64()))
    try:
        _from_iso(text, "UTC", "earliest", "shift_forward")
        return ISO
    except TimestampValueError:
        pass
    for pattern in COMMON_PATTERNS:
        if pc.all(pc.is_valid(pc.strptime(text, format=pattern, unit="s", error_is_null=True))).as_py():
            return pattern
    raise ValueError(f"no timestamp format reads {text[0].as_py()!r} (and maybe others): declare a strftime "
                     "pattern as timestamp_format, e.g. '%d/%m/%Y %H:%M'")


# --- helpers ---------------------------------------------------------------------------------


def _one_array(values) -> pa.Array:
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return values if isinstance(values, pa.Array) else pa.array(values)


def cast_or_null(values: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast, the values that fail becoming null (Arrow's cast fails whole, so failing rows are found first)."""
    import pyarrow as pa

    try:
        return values.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Bisect down to the failing values: a few casts of halves, never one per row.
    stack = [(0, len(values))]
    out: list[tuple[int, pa.Array]] = []
    while stack:
        start, stop = stack.pop()
        chunk = values.slice(start, stop - start)
        try:
            out.append((start, chunk.cast(target)))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if stop - start == 1:
                out.append((start, pa.nulls(1, target)))
            else:
                middle = (start + stop) // 2
                stack += [(middle, stop), (start, middle)]
    pieces = [array for _, array in sorted(out, key=lambda item: item[0])]
    return pa.concat_arrays(pieces) if pieces else pa.array([], target)


def _first_unread(text: pa.Array, parsed: pa.Array, problem: str) -> None:
    """Raise for the first value that is present in `text` but null in `parsed`."""
    import pyarrow.compute as pc

    lost = pc.and_(pc.is_valid(text), pc.is_null(parsed))
    if pc.any(lost).as_py():
        row = pc.index(lost, True).as_py()
        raise TimestampValueError(row, text[row].as_py(), problem)


def _from_iso(text: pa.Array, zone_key: str, ambiguous: str, nonexistent: str) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.utf8_trim_whitespace(text)
    has_offset = pc.match_substring_regex(text, _OFFSET)
    with_offset = pc.sum(has_offset).as_py() or 0
    present = len(text) - text.null_count
    if 0 < with_offset < present:
        # A column is written one way; a value without the offset the others have is cut short or foreign.
        odd = pc.and_(pc.is_valid(text), pc.invert(has_offset) if with_offset * 2 >= present else has_offset)
        row = pc.index(odd, True).as_py()
        naive_odd = with_offset * 2 >= present
        if cast_or_null(text.slice(row, 1), pa.timestamp("us") if naive_odd else pa.timestamp("us", "UTC"))[0].as_py() \
                is None:
            raise TimestampValueError(row, text[row].as_py(), "not an ISO 8601 timestamp")
        first = pc.index(pc.fill_null(pc.equal(has_offset, pc.invert(odd)), False), True).as_py()
        raise TimestampValueError(row, text[row].as_py(), (
            f"{'no' if with_offset * 2 >= present else 'a'} zone offset, unlike data row {first + 1} "
            f"({text[first].as_py()!r}): a column's timestamps are all with or all without an offset"))
    if with_offset:
        parsed = cast_or_null(text, pa.timestamp("us", tz="UTC"))
        _first_unread(text, parsed, "not an ISO 8601 timestamp")
        return parsed
    naive = cast_or_null(text, pa.timestamp("us"))
    _first_unread(text, naive, "not an ISO 8601 timestamp")
    return _assume_local(naive, zone_key, ambiguous, nonexistent, text)


def _numbers_of(text: pa.Array, fmt: str) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.utf8_trim_whitespace(text)
    numbers = cast_or_null(text, pa.float64())
    _first_unread(text, numbers, f"not a number of {'seconds' if fmt == EPOCH_S else 'milliseconds'} "
                                 "since 1970-01-01 (timestamp_format " + fmt + ")")
    return numbers


def _from_epoch(numbers: pa.Array, fmt: str) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    per_unit = 1_000_000 if fmt == EPOCH_S else 1_000
    if pa.types.is_integer(numbers.type):
        micros = pc.multiply_checked(numbers.cast(pa.int64()), per_unit)
    else:
        finite = pc.is_finite(numbers)
        if not pc.all(pc.or_(finite, pc.is_null(numbers))).as_py():
            row = pc.index(pc.invert(pc.fill_null(finite, True)), True).as_py()
            raise TimestampValueError(row, numbers[row].as_py(), "not a finite number")
        micros = pc.round(pc.multiply(numbers, float(per_unit))).cast(pa.int64())
    return micros.cast(pa.timestamp("us", tz="UTC"))


def _from_pattern(text: pa.Array, fmt: str, zone_key: str, ambiguous: str, nonexistent: str) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.utf8_trim_whitespace(text)
    parsed = pc.strptime(text, format=fmt, unit="us", error_is_null=True)
    _first_unread(text, parsed, f"does not match timestamp_format {fmt!r}")
    if parsed.type.tz is not None:  # the pattern has %z
        return parsed.cast(pa.timestamp("us", tz="UTC"))
    return _assume_local(parsed, zone_key, ambiguous, nonexistent, text)


def _assume_local(naive: pa.Array, zone_key: str, ambiguous: str, nonexistent: str, shown: pa.Array) -> pa.Array:
    """Naive wall-clock times in the zone as UTC instants, by the DST rules; `shown` names a rejected row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if zone_key == "UTC":
        return naive.cast(pa.timestamp("us", tz="UTC"))
    amb, gap = AMBIGUOUS_RULES[ambiguous], NONEXISTENT_RULES[nonexistent]
    for rule, name, problem in ((amb, "ambiguous", "happens twice"), (gap, "nonexistent", "never happens")):
        if rule != "raise":
            continue
        # Both readings of every row; rows where they differ are the ambiguous (or skipped) times.
        options = {"ambiguous": "earliest", "nonexistent": "earliest"}
        early = pc.assume_timezone(naive, zone_key, **options)
        late = pc.assume_timezone(naive, zone_key, **{**options, name: "latest"})
        differs = pc.fill_null(pc.not_equal(early, late), False)
        if pc.any(differs).as_py():
            row = pc.index(differs, True).as_py()
            raise TimestampValueError(row, shown[row].as_py(), (
                f"{name} local time in {zone_key}: it {problem} on a daylight-saving change "
                f"({name}_times: reject)"))
    chosen = pc.assume_timezone(naive, zone_key, ambiguous="earliest" if amb == "raise" else amb,
                                nonexistent="latest" if gap == "raise" else gap)
    return chosen.cast(pa.timestamp("us", tz="UTC"))


def _coarsest_unit(micros: pa.Array) -> str:
    import pyarrow.compute as pc

    for unit, size in (("s", 1_000_000), ("ms", 1_000)):
        if pc.all(pc.equal(pc.subtract(micros, pc.multiply(pc.divide(micros, size), size)), 0)).as_py() is not False:
            return unit
    return "us"
