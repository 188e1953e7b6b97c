"""The optional label_feed section: defaults, cross-references, and specs without it."""

import copy

import pytest
import yaml

from ml_assets.spec.labels import DEFAULT_MAX_DELAY_DAYS, DEFAULT_MIN_COVERAGE
from ml_assets.spec.model import SpecError, load_spec, parse_spec, spec_path


@pytest.fixture(scope="module")
def feed_raw() -> dict:
    return yaml.safe_load(spec_path("flights_label_feed").read_text())


def _with(raw: dict, **changes) -> dict:
    raw = copy.deepcopy(raw)
    raw.update(changes)
    return raw


def test_bundled_feed_variant_declares_the_outcomes_as_a_separate_keyed_source():
    spec = load_spec("flights_label_feed")
    assert spec.label_feed.source == "outcomes"
    assert spec.feature_sources == ["flights", "weather"]
    assert spec.source_keys("outcomes") == spec.key_columns
    assert "arr_delay" not in spec.sources["flights"].columns


def test_without_the_section_labels_come_from_the_base_source():
    spec = load_spec("flights")
    assert spec.label_feed is None
    assert spec.feature_sources == list(spec.sources)
    assert spec.source_keys("weather") == ["origin", "time_hour"]


def test_defaults_are_documented_values(feed_raw):
    spec = parse_spec(_with(feed_raw, label_feed={"source": "outcomes"}))
    assert spec.label_feed.max_delay_days == DEFAULT_MAX_DELAY_DAYS
    assert spec.label_feed.min_coverage == DEFAULT_MIN_COVERAGE


@pytest.mark.parametrize(("feed", "message"), [
    ({"source": "nope"}, "label_feed.source 'nope' is not a declared source"),
    ({"source": "flights"}, "is the base source"),
    ({"source": "weather"}, "also joined as features"),
    ({"source": "outcomes", "max_delay_days": -1}, "label_feed.max_delay_days"),
    ({"source": "outcomes", "min_coverage": 0}, "label_feed.min_coverage"),
    ({"source": "outcomes", "extra": 1}, "label_feed.extra"),
])
def test_bad_sections_name_the_field(feed_raw, feed, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(_with(feed_raw, label_feed=feed))


def test_the_feed_must_carry_every_key_with_the_base_type(feed_raw):
    raw = copy.deepcopy(feed_raw)
    del raw["sources"]["outcomes"]["columns"]["origin"]
    with pytest.raises(SpecError, match="key column 'origin' is not a column of source 'outcomes'"):
        parse_spec(raw)
    raw = copy.deepcopy(feed_raw)
    raw["sources"]["outcomes"]["columns"]["flight"] = "string"
    with pytest.raises(SpecError, match="key column 'flight' is string in 'outcomes' but int in 'flights'"):
        parse_spec(raw)
