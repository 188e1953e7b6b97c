"""Raw sources in the spec: schema, day folders (which blobs, compression, line limit), keys and clock rules."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Blobs a day folder may hold that are not data: Hadoop/Spark markers (_SUCCESS, _committed_*,
#: _temporary/...) and hidden files (.DS_Store, .part.crc). Matched against every path segment.
DEFAULT_IGNORE = ("_*", ".*")
DEFAULT_MAX_LINE_BYTES = 1 << 20
DEFAULT_MAX_DECOMPRESSED_BYTES = 1 << 30
#: timestamp_format names; anything else must be a strftime pattern (ml_assets/ml/timestamps.py reads them).
NAMED_TIMESTAMP_FORMATS = ("iso", "epoch_s", "epoch_ms")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnType(StrEnum):
    """Types a raw column may declare; each maps to one Arrow and one Spark type."""

    string = "string"
    int = "int"
    float = "float"
    bool = "bool"
    date = "date"
    timestamp = "timestamp"


LocalPart = Literal["year", "month", "day", "hour", "minute"]


class HourRange(Strict):
    min: int = Field(0, ge=0, le=23, description="Earliest local hour a row's timestamp may have")
    max: int = Field(23, ge=0, le=23, description="Latest local hour (inclusive)")

    @model_validator(mode="after")
    def _ordered(self) -> HourRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class ClockSpec(Strict):
    """Sanity rules on the timestamp, catching a clock shifted by hours that still lands in the day."""

    local_parts: dict[LocalPart, str] = Field(
        default_factory=dict,
        description="Int columns holding the row's local (spec timezone) time, by part, e.g. "
        "{year: year, month: month, day: day, hour: hour}; the timestamp must agree with them",
    )
    hours: HourRange | None = Field(
        None, description="Local hours the timestamps fall in (e.g. scheduled flights: 5 to 23)",
    )
    max_bad_share: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of a day's rows each rule may miss before the day fails",
    )

    @model_validator(mode="after")
    def _some_rule(self) -> ClockSpec:
        if not self.local_parts and self.hours is None:
            raise ValueError("declare local_parts, hours or both")
        return self


class SourceSpec(Strict):
    prefix: str = Field(description="Blob prefix the source lands under, e.g. raw/flights")
    format: Literal["csv", "parquet"] = Field(description="File format of the landed blobs")
    compression: Literal["none", "gzip", "auto"] = Field(
        "none", description="csv only: none, gzip (.csv.gz blobs), or auto (gzip recognised by its magic bytes)",
    )
    files: list[str] | None = Field(
        None, min_length=1,
        description="Glob patterns (fnmatch, on the path inside the day folder) of data blobs; default by "
        "format: *.csv, *.csv.gz (gzip), both (auto), *.parquet. Other blobs are ignored",
    )
    ignore: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IGNORE),
        description="Glob patterns of path segments that are never data (markers, hidden files, temp folders)",
    )
    max_line_bytes: int = Field(
        DEFAULT_MAX_LINE_BYTES, ge=64, le=1 << 29,
        description="csv only: longest line accepted; a longer one fails the blob naming its line",
    )
    max_decompressed_bytes: int = Field(
        DEFAULT_MAX_DECOMPRESSED_BYTES, ge=1024,
        description="gzip only: most bytes one blob may expand to (a gzip bomb fails its blob, not the process)",
    )
    timestamp_column: str = Field(description="Column whose local date assigns a row to a day")
    timestamp_format: str = Field(
        "iso", description="How timestamp values are written: iso (ISO 8601 with or without a zone offset; "
        "without one a time is local to the spec's timezone), epoch_s / epoch_ms (seconds / milliseconds "
        "since 1970-01-01 UTC), or a strftime pattern such as '%d/%m/%Y %H:%M' (local time unless it has %z)",
    )
    ambiguous_times: Literal["earliest", "latest", "reject"] = Field(
        "earliest", description="A naive local time that happens twice (clocks go back): its earliest or "
        "latest instant, or reject the file naming the row",
    )
    nonexistent_times: Literal["shift_forward", "reject"] = Field(
        "shift_forward", description="A naive local time skipped when clocks go forward: shift it to the "
        "first instant after the gap (02:30 -> 03:00), or reject the file naming the row",
    )
    grain: Literal["daily"] = Field("daily", description="Partition grain of the landed blobs")
    columns: dict[str, ColumnType] = Field(description="Expected columns and their types")
    min_rows: int = Field(1, ge=1, description="Fewest rows a landed day may have")
    key_columns: list[str] | None = Field(
        None, min_length=1,
        description="Columns unique per day (the base source defaults to the spec's key_columns)",
    )
    clock: ClockSpec | None = Field(None, description="Optional clock-sanity rules on timestamp_column")

    @field_validator("prefix")
    @classmethod
    def _prefix_is_relative(cls, value: str) -> str:
        value = value.strip("/")
        if not value or ".." in value.split("/"):
            raise ValueError("must be a relative blob prefix such as raw/flights")
        return value

    @field_validator("columns")
    @classmethod
    def _columns_are_identifiers(cls, value: dict[str, ColumnType]) -> dict[str, ColumnType]:
        if not value:
            raise ValueError("must list at least one column")
        for name in value:
            if not IDENTIFIER.match(name):
                raise ValueError(f"column name {name!r} is not an identifier")
        return value

    @field_validator("timestamp_format")
    @classmethod
    def _known_timestamp_format(cls, value: str) -> str:
        if value in NAMED_TIMESTAMP_FORMATS or "%" in value:
            return value
        raise ValueError(f"{value!r} is none of {list(NAMED_TIMESTAMP_FORMATS)} and no strftime pattern "
                         "(a pattern holds % fields, e.g. '%d/%m/%Y %H:%M')")

    @model_validator(mode="after")
    def _timestamp_column_declared(self) -> SourceSpec:
        declared = self.columns.get(self.timestamp_column)
        if declared is None:
            raise ValueError(f"timestamp_column {self.timestamp_column!r} is not in columns")
        if declared not in (ColumnType.timestamp, ColumnType.date):
            raise ValueError(
                f"timestamp_column {self.timestamp_column!r} must be of type timestamp or date, "
                f"not {declared}"
            )
        if declared == ColumnType.date and self.timestamp_format.startswith("epoch"):
            raise ValueError(f"timestamp_format {self.timestamp_format} does not apply to a date column")
        return self

    @model_validator(mode="after")
    def _folder_and_rules(self) -> SourceSpec:
        if self.format == "parquet" and self.compression != "none":
            raise ValueError("compression applies to csv only (Parquet compresses inside the file)")
        for column in self.key_columns or []:
            if column not in self.columns:
                raise ValueError(f"key_columns: {column!r} is not in columns")
        if self.clock is not None:
            if self.columns[self.timestamp_column] != ColumnType.timestamp:
                raise ValueError(f"clock: timestamp_column {self.timestamp_column!r} must be a timestamp")
            for part, column in self.clock.local_parts.items():
                if self.columns.get(column) != ColumnType.int:
                    raise ValueError(f"clock.local_parts.{part}: {column!r} is not an int column")
        return self

    @property
    def file_patterns(self) -> list[str]:
        if self.files is not None:
            return self.files
        if self.format == "parquet":
            return ["*.parquet"]
        return {"none": ["*.csv"], "gzip": ["*.csv.gz"], "auto": ["*.csv", "*.csv.gz"]}[self.compression]
