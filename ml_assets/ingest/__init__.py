"""Land users' files (CSV, Parquet, JSON Lines) into day blobs, the layout the raw assets read (no Dagster).

`ml_assets.landing` is the public entry point (`land`, `land_files`); this package holds the parts:
files.py finds and reads files, days.py splits, merges and encodes day blobs, land.py writes them.
"""

from ml_assets.ingest.days import blob_key
from ml_assets.ingest.files import LandingError, find_files, read_file
from ml_assets.ingest.land import LandedBlob, LandReport, land_files, land_tables

__all__ = ["LandReport", "LandedBlob", "LandingError", "blob_key", "find_files", "land_files", "land_tables",
           "read_file"]
