"""The data-parallel table: each data-parallel cell's workers, slowest worker, throughput and weak scaling."""
from __future__ import annotations

from fwbench.harness import fmt
from fwbench.harness.reporting.tables import Row, Table, backend_label, with_interval

NOTE = ("Step ms is the harness's clock over whole calls of steps, each returning when every worker has answered; "
        "slowest worker is each step's largest worker time, median over steps, where the workers keep their own "
        "clocks (torch@ddp), else the step ms. Weak-scaling efficiency is fwbench's own derived metric (MLPerf and "
        "AlgoPerf report throughput and time to result): images/s with N workers over N times images/s of the same "
        "backend with 1 worker at the per-worker batch and the same threads per worker; 100% is perfect. Peak MB "
        "sums the workers' processes, and the harness's process where it only drives them (flax@dp on a CPU).")


def scaling_tables(results: dict) -> list[Table]:
    """One table of every data-parallel cell in the run; none when it has none."""
    cells = [c for c in results["cells"] if c.get("workers") and c.get("status") == "ok"]
    if not cells:
        return []
    rows = []
    for cell in cells:
        m = cell["metrics"]
        rows.append(Row([backend_label(cell), cell["model"], fmt.count(cell["batch_size"]),
                         fmt.count(m.get("threads_per_worker")), with_interval(cell, "step_ms", fmt.ms),
                         fmt.ms(m.get("slowest_worker_step_ms")), fmt.count(m.get("images_per_s")),
                         fmt.count(m.get("images_per_s_per_worker")),
                         fmt.percent(m.get("weak_scaling_efficiency")), fmt.count(m.get("peak_rss_mb")),
                         fmt.percent(m.get("test_accuracy")), fmt.seconds(m.get("time_to_accuracy_s"), 1),
                         m.get("scaling_note") or fmt.DASH]))
    headers = ["backend", "model", "global batch", "threads/worker", "step ms", "slowest worker ms", "images/s",
               "images/s/worker", "weak-scaling efficiency", "peak MB", "accuracy", "time to accuracy s", "note"]
    return [Table("Data parallelism", headers, rows, NOTE)]
