"""Data-parallel cells in the bench: their 1-worker baseline, weak-scaling efficiency, and the report's table."""
import copy
import json

from dataclasses import replace

import results_fixture
from fwbench.harness.bench import parallel
from fwbench.harness.bench.suite import PRESETS, cells
from fwbench.harness.reporting import render


def test_a_data_parallel_mode_gets_its_one_worker_baseline_and_others_nothing():
    suite = replace(PRESETS["quick"], backends=("torch", "torch@ddp"), models=("mlp",), batch_sizes=(64, 32),
                    workers=2)
    found = [(c.backend, c.batch_size, c.workers, c.threads, c.train) for c in cells(suite)]
    threads = found[1][3]
    assert threads >= 1
    # b64 on 2 workers adds b32 on 1 worker, timed only, same threads; b32 on 2 adds b16 on 1.
    assert found == [("torch", 64, None, None, True), ("torch@ddp", 64, 2, threads, True),
                     ("torch@ddp", 32, 1, threads, False), ("torch", 32, None, None, False),
                     ("torch@ddp", 32, 2, threads, False), ("torch@ddp", 16, 1, threads, False)]
    one = replace(suite, workers=1)
    assert [(c.backend, c.batch_size, c.workers) for c in cells(one) if c.backend == "torch@ddp"] == \
        [("torch@ddp", 64, 1), ("torch@ddp", 32, 1)]  # one worker is its own baseline


def _dp_doc() -> dict:
    doc = json.loads(json.dumps(results_fixture.build()))
    base = next(c for c in doc["cells"] if c["backend"] == "torch" and c["model"] == "mlp")
    two, one = copy.deepcopy(base), copy.deepcopy(base)
    two.update(backend="torch@ddp", mode="ddp", workers=2)
    one.update(backend="torch@ddp", mode="ddp", workers=1, batch_size=32, train=False)
    two["metrics"].update(step_ms=4.0, images_per_s=16000.0, workers=2, threads_per_worker=1,
                          slowest_worker_step_ms=3.7, images_per_s_per_worker=8000.0,
                          workers_peak_rss_mb=[410.0, 360.0], peak_rss_mb=770.0, scaling_note=None)
    one["metrics"].update(step_ms=1.4, images_per_s=22857.0, workers=1, threads_per_worker=1,
                          slowest_worker_step_ms=1.39, images_per_s_per_worker=22857.0,
                          workers_peak_rss_mb=[410.0], peak_rss_mb=410.0, scaling_note=None,
                          test_accuracy=None, time_to_accuracy_s=None)
    doc["cells"] += [two, one]
    return doc


def test_efficiency_is_throughput_over_workers_times_the_baseline_s():
    doc = _dp_doc()
    parallel.link(doc["cells"])
    two, one = doc["cells"][-2:]
    assert abs(two["metrics"]["weak_scaling_efficiency"] - 16000 / (2 * 22857)) < 1e-12
    assert "weak_scaling_efficiency" not in one["metrics"]
    doc["cells"].pop()  # no baseline in the run: no efficiency, not a guess
    parallel.link(doc["cells"])
    assert doc["cells"][-1]["metrics"]["weak_scaling_efficiency"] is None


def test_the_report_has_a_data_parallel_table_with_the_mark_where_it_applies(tmp_path):
    doc = _dp_doc()
    doc["cells"][-2]["metrics"]["scaling_note"] = "not a scaling measurement: 3 workers x 1 thread on 2 cores"
    parallel.link(doc["cells"])
    path = tmp_path / "bench-dp.json"
    path.write_text(json.dumps(doc))
    md = render([str(path)])
    table = md.split("## Data parallelism", 1)[1].split("\n\n", 2)[1].splitlines()
    two = next(line for line in table if line.startswith("| torch (ddp, 2 workers)"))
    one = next(line for line in table if line.startswith("| torch (ddp, 1 worker)"))
    assert "35.00%" in two and "not a scaling measurement: 3 workers" in two and "| 770 |" in two
    assert one.rstrip().endswith("| — |")
    assert "fwbench's own derived metric" in md
    plain = tmp_path / "bench-plain.json"
    plain.write_text(json.dumps(results_fixture.build()))
    assert "Data parallelism" not in render([str(plain)])
