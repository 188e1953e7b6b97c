"""Bundled example data sets the landing command can replay into a store."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd


def _nycflights13() -> dict[str, pd.DataFrame]:
    from ml_assets.examples.nycflights13 import load

    return load()


def _nycflights13_label_feed() -> dict[str, pd.DataFrame]:
    from ml_assets.examples.nycflights13 import load_with_label_feed

    return load_with_label_feed()


LOADERS: dict[str, Callable[[], dict[str, pd.DataFrame]]] = {
    "nycflights13": _nycflights13, "nycflights13_label_feed": _nycflights13_label_feed}


def load_example(name: str) -> dict[str, pd.DataFrame]:
    try:
        loader = LOADERS[name]
    except KeyError:
        raise ValueError(f"no bundled example data named {name!r}; available: {sorted(LOADERS)}") from None
    return loader()
