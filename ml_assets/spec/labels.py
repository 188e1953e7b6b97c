"""The label feed: outcomes landing as their own source, days after the examples they label.

Without a `label_feed` section the label comes from the base source's own columns (the outcome sits
in the same blob as the features). With one, the feed is a normal entry of `sources:` whose day is
the day an outcome *landed*; its rows carry the spec's `key_columns` and the outcome columns the
`label` expressions read. The labels of event day D join D's examples by key with every feed row
landed on days D .. D + max_delay_days.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ml_assets.spec.sources import Strict

if TYPE_CHECKING:
    from ml_assets.spec.model import DatasetSpec

DEFAULT_MAX_DELAY_DAYS = 30
DEFAULT_MIN_COVERAGE = 0.95


class LabelFeedSpec(Strict):
    source: str = Field(description="Declared source holding the outcomes, partitioned by the day they landed")
    max_delay_days: int = Field(
        DEFAULT_MAX_DELAY_DAYS, ge=0, le=366,
        description="Latest landing day of an outcome, in days after its example's day: the labels of day D read "
        "feed days D .. D + max_delay_days, and a feed day re-materializes the labels of the days it can reach",
    )
    min_coverage: float = Field(
        DEFAULT_MIN_COVERAGE, gt=0.0, le=1.0,
        description="Share of a day's examples whose outcome landed before the day counts as settled "
        "(training and live performance skip days still filling up: early outcomes are a biased sample); "
        "a day's later labels re-judge every live-performance window holding it",
    )


def check_label_feed(spec: DatasetSpec) -> None:
    """Cross-references of the section: a declared, separate source carrying the keys with the same types."""
    feed = spec.label_feed
    if feed is None:
        return
    source = spec.sources.get(feed.source)
    if source is None:
        raise ValueError(f"label_feed.source {feed.source!r} is not a declared source")
    if feed.source == spec.join.base:
        raise ValueError(f"label_feed.source {feed.source!r} is the base source; drop label_feed to read labels "
                         "from the base source's columns")
    if feed.source in {join.source for join in spec.join.joins}:
        raise ValueError(f"label_feed.source {feed.source!r} is also joined as features (it would leak the label)")
    base = spec.sources[spec.join.base]
    for column in spec.key_columns:
        if column not in source.columns:
            raise ValueError(f"label_feed: key column {column!r} is not a column of source {feed.source!r}")
        if source.columns[column] != base.columns[column]:
            raise ValueError(f"label_feed: key column {column!r} is {source.columns[column]} in {feed.source!r} "
                             f"but {base.columns[column]} in {spec.join.base!r}")
    if spec.label.name in spec.key_columns:
        raise ValueError(f"label.name {spec.label.name!r} is also a key column")
