"""Benchmark of loading the code location: `import ml_assets.definitions` vs a bare `import dagster`.

Run:  cd /work/main && .venv/bin/python bench/bench_code_location.py [--repeats 5] [--env local|azure]

Prints ONE JSON object on stdout; progress goes to stderr.

Every timing is a FRESH interpreter (this one's executable, flags `-W ignore`, the same
environment for both), so nothing is cached in sys.modules; the two imports alternate, after one
untimed warm-up of each (bytecode and file caches). Bytecode is cached for both, as in any
installed deployment (pip and the Docker image compile it): the children write and read it under
a temporary PYTHONPYCACHEPREFIX, whatever PYTHONDONTWRITEBYTECODE says here (with it set and no
cache, every run would compile ml_assets from source, ~0.15 s, while dagster's site-packages ship
compiled). `--no-bytecode-cache` measures that case instead. Per run two figures:
  import_s   perf_counter around the import statement inside the child (what a code server or
             `dagster definitions validate` pays on top of starting Python);
  import_cpu_s  CPU time (user + system) of that import: on a busy machine wall time mostly
             measures waiting for a core, CPU time what the import itself costs;
  process_s  wall time of the whole child, interpreter start-up and exit included.
Reported: the median of `--repeats` runs of each, and the ratios definitions / dagster (goal for
import_s: <= 1.3; judged on wall time when the machine is idle, else see ratio_import_cpu). With `--env azure` the children get ML_ASSETS_ENV=azure and an Azurite-style
connection string (nothing is contacted at load), to show that the Azure environment loads as
light. Also reported: which heavy libraries the definitions child had imported (should be none),
and the machine's load average, since other processes compete for its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_RATIO = 1.3
HEAVY = ("pandas", "pyarrow", "numpy", "azure", "matplotlib", "tensorflow", "keras", "pyspark", "sklearn",
         "scipy")
AZURITE_STYLE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)

CHILD = """
import sys, time, json
t, c = time.perf_counter(), time.process_time()
import {module}
elapsed, cpu = time.perf_counter() - t, time.process_time() - c
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))
print(json.dumps({{"import_s": elapsed, "import_cpu_s": cpu, "heavy": heavy, "modules": len(sys.modules)}}))
"""


def child_env(env_name: str, pycache: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ML_ASSETS_", "AZURE_STORAGE_", "SMTP_", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"))}
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = pycache
    env["DAGSTER_DISABLE_TELEMETRY"] = "1"
    env["ML_ASSETS_ENV"] = env_name
    if env_name == "azure":
        env["AZURE_STORAGE_CONNECTION_STRING"] = AZURITE_STYLE
    return env


def time_import(module: str, env: dict[str, str]) -> dict:
    code = CHILD.format(module=module, heavy=HEAVY)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, env=env,
                         capture_output=True, text=True, check=False)
    process_s = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"`import {module}` failed in a fresh interpreter:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = process_s
    return result


def bench(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="pycache-") as pycache:
        return measure(args, child_env(args.env, None if args.no_bytecode_cache else pycache))


def measure(args: argparse.Namespace, env: dict[str, str]) -> dict:
    modules = {"dagster": "dagster", "definitions": "ml_assets.definitions"}
    for module in modules.values():  # warm-up: bytecode compiled, files in the page cache
        time_import(module, env)
    runs: dict[str, list[dict]] = {name: [] for name in modules}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        order = list(modules.items()) if repeat % 2 == 0 else list(reversed(modules.items()))
        for name, module in order:
            runs[name].append(time_import(module, env))
            print(f"run {repeat + 1}/{args.repeats} {name}: import {runs[name][-1]['import_s']:.2f} s",
                  file=sys.stderr, flush=True)
    keys = ("import_s", "import_cpu_s", "process_s")
    median = {name: {key: round(statistics.median(r[key] for r in results), 3) for key in keys}
              for name, results in runs.items()}
    import_ratio = median["definitions"]["import_s"] / median["dagster"]["import_s"]
    return {
        "benchmark": "code_location_load",
        "python": platform.python_version(),
        "env": args.env,
        "bytecode_cached": not args.no_bytecode_cache,
        "repeats": args.repeats,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "median": median,
        "runs_import_s": {name: [round(r["import_s"], 3) for r in results] for name, results in runs.items()},
        "ratio_import": round(import_ratio, 3),
        "ratio_import_cpu": round(median["definitions"]["import_cpu_s"] / median["dagster"]["import_cpu_s"], 3),
        "ratio_process": round(median["definitions"]["process_s"] / median["dagster"]["process_s"], 3),
        "extra_ms_over_dagster": round(1000 * (median["definitions"]["import_s"] - median["dagster"]["import_s"])),
        "modules_loaded": {name: results[-1]["modules"] for name, results in runs.items()},
        "heavy_modules_loaded_by_definitions": sorted({m for r in runs["definitions"] for m in r["heavy"]}),
        "goal_ratio_max": GOAL_RATIO,
        "goal_met": import_ratio <= GOAL_RATIO,
        "goal_met_cpu": median["definitions"]["import_cpu_s"] <= GOAL_RATIO * median["dagster"]["import_cpu_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh interpreters per import")
    parser.add_argument("--env", choices=("local", "azure"), default="local", help="ML_ASSETS_ENV of the children")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="children write no bytecode, so ml_assets compiles from source every run "
                             "(dagster's installed bytecode is still read)")
    args = parser.parse_args(argv)
    print(json.dumps(bench(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
