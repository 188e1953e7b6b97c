"""The feature path never brings a partition's rows to the driver: its memory must not grow with volume.

A static guard over the modules the features, labels and clusters steps run: no toPandas(),
toLocalIterator() or .rdd, and collect() only in the functions below, which collect aggregates
(one row per day, or a bounded sample of duplicate keys), never rows. A new collect() elsewhere
fails here until it is shown to be bounded and added to the list. bench/bench_volume.py measures
the driver's RSS itself at x1, x5 and x20 of a day.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ml_assets"
FEATURE_PATH = [
    "ml/features.py",
    "ml/clustering.py",
    "ml/unique_keys.py",
    "defs/assets/features.py",
    "defs/assets/clusters.py",
    "defs/checks/data_quality.py",
    "resources/spark_io.py",
]
# (module, function) pairs whose collect() returns an aggregate of bounded size.
AGGREGATE_COLLECTS = {
    ("ml/features.py", "daily_profile"),  # one row per day (with at most SHOWN_KEYS duplicate keys)
    ("ml/clustering.py", "fit_kmeans"),  # one row: count, means, standard deviations
    ("defs/checks/data_quality.py", "label_rate"),  # one row per day
    ("resources/spark_io.py", "_spark_counts"),  # one row per day: (day, rows)
}
FORBIDDEN = {"toPandas", "toLocalIterator", "rdd"}


def _calls(path: str) -> list[tuple[str, str, int]]:
    """(enclosing function, attribute used, line) for every attribute access of interest."""
    tree = ast.parse((PACKAGE / path).read_text())
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.Attribute) and child.attr in FORBIDDEN | {"collect"}:
                found.append((function, child.attr, child.lineno))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_no_rows_are_pulled_to_the_driver_in_the_feature_path():
    offences = []
    for path in FEATURE_PATH:
        if not (PACKAGE / path).exists():
            continue  # a module split or renamed: its successor must be listed above
        for function, attr, line in _calls(path):
            if attr in FORBIDDEN:
                offences.append(f"{path}:{line} {function}() uses .{attr}")
            elif (path, function) not in AGGREGATE_COLLECTS:
                offences.append(f"{path}:{line} {function}() calls collect() (not a known aggregate)")
    assert not offences, "driver-side row pulls in the feature path:\n" + "\n".join(offences)


def test_the_guard_sees_the_feature_path():
    # The guard is only worth something if it reads the modules that exist and finds the known collects.
    present = [p for p in FEATURE_PATH if (PACKAGE / p).exists()]
    assert {"ml/features.py", "defs/assets/features.py", "resources/spark_io.py"} <= set(present)
    seen = {(p, f) for p in present for f, attr, _ in _calls(p) if attr == "collect"}
    assert ("ml/features.py", "daily_profile") in seen
