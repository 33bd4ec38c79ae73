"""The metric columns of a model table: header, where the value lives, its format and which way is better."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from harness.reporting import fmt

LOW, HIGH = "low", "high"


@dataclass(frozen=True)
class Column:
    """One metric column; `key` is read from cell["metrics"] and decides the best value."""
    header: str
    key: str
    better: str
    show: Callable[[dict], str]


def _memory(m: dict) -> str:
    host, gpu = m.get("peak_rss_mb"), m.get("gpu_peak_mb")
    return fmt.count(host) if gpu is None else f"{fmt.count(host)} / {fmt.count(gpu)} GPU"


def _time_to_accuracy(m: dict) -> str:
    # null means "never reached" only where accuracy was measured; timing-only cells have neither.
    if m.get("time_to_accuracy_s") is None and m.get("test_accuracy") is not None:
        return "not reached"
    return fmt.seconds(m.get("time_to_accuracy_s"), 1)


COLUMNS = [
    Column("step ms", "step_ms", LOW, lambda m: fmt.ms(m.get("step_ms"))),
    Column("images/s", "images_per_s", HIGH, lambda m: fmt.count(m.get("images_per_s"))),
    Column("epoch s", "epoch_s", LOW, lambda m: fmt.seconds(m.get("epoch_s"))),
    Column("compile s", "compile_s", LOW, lambda m: fmt.seconds(m.get("compile_s"), 3)),
    Column("peak MB", "peak_rss_mb", LOW, _memory),
    Column("accuracy", "test_accuracy", HIGH, lambda m: fmt.percent(m.get("test_accuracy"))),
    Column("time to accuracy s", "time_to_accuracy_s", LOW, _time_to_accuracy),
    Column("worst grad diff", "agreement_worst_rel_l2", LOW, lambda m: fmt.sci(m.get("agreement_worst_rel_l2"))),
]
