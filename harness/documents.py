"""The JSON documents fwbench writes, by the schema id each carries: a reader checks it before it trusts a field."""
from __future__ import annotations

from pathlib import Path

RESULTS = "fwbench.results/2"     # bench and compare runs
RESULTS_V1 = "fwbench.results/1"  # still read: upgraded on load
AGREE = "fwbench.agree/1"         # agree --json and --dump
RESULTS_SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "results-2.schema.json"
