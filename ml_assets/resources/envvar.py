"""Secret resource fields given as `dg.EnvVar`, read when a resource is used outside a run."""

from __future__ import annotations

import dagster as dg


def field_value(value):
    """The value of a resource field that may hold an unresolved `dg.EnvVar`.

    Secrets are given to resources as `dg.EnvVar`, so the UI and run configs show the variable's
    name, never its value. Inside a run Dagster has already replaced each EnvVar by its value;
    outside one (the CLI, the replay, tests) the field still holds the EnvVar and is read here,
    from the same variable. An unset variable reads as None.
    """
    if isinstance(value, dg.EnvVar):
        return value.get_value()
    return value

