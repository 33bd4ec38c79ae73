"""`python -m harness`, from the repository root, is the `fwbench` command (as `python -m fwbench` is anywhere)."""
from fwbench.harness.cli import main

raise SystemExit(main())
