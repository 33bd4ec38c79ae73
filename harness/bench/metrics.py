"""The one registry of metrics: unit, how it is measured, column header, which way is better, format and judging."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fwbench.harness import fmt

LOWER, HIGHER = "lower", "higher"
# How a comparison judges a metric: TIME by a rank test on per-process figures after removing the machine's
# common shift, MEMORY by the same test without the shift, ACCURACY by a drop beyond its own spread.
TIME, MEMORY, ACCURACY = "time", "memory", "accuracy"


@dataclass(frozen=True)
class Metric:
    key: str
    unit: str
    how: str
    header: str | None = None          # its column in the model tables; None: kept in the results only
    better: str | None = None          # LOWER or HIGHER; None: not ranked
    form: Callable = fmt.ms
    judged: str | None = None          # TIME, MEMORY, ACCURACY, or None: shown in comparisons, never judged
    words: tuple[str, str] = ("faster", "slower")  # verdict words for better, worse
    training: bool = False             # measured by the training run only (one process), not by every run


def _memory(m: dict) -> str:
    host, gpu = m.get("peak_rss_mb"), m.get("gpu_peak_mb")
    return fmt.count(host) if gpu is None else f"{fmt.count(host)} / {fmt.count(gpu)} GPU"


def _time_to_accuracy(m: dict) -> str:
    # null means "never reached" only where accuracy was measured; timing-only cells have neither.
    if m.get("time_to_accuracy_s") is None and m.get("test_accuracy") is not None:
        return "not reached"
    return fmt.seconds(m.get("time_to_accuracy_s"), 1)


def _decimals(digits: int) -> Callable:
    """A number to a fixed number of decimals, with thousands separators: 1,234.5."""
    return lambda v: fmt.DASH if v is None else f"{v:,.{digits}f}"


REGISTRY = [
    Metric("step_ms", "ms", "per step: the median over the run's timed calls after warm-up; a call is train_steps + "
           "synchronize(), one step or, in a fused mode, steps_per_call steps in one compiled loop or graph; batches "
           "prepared on the device beforehand. The cell's figure is the median over its runs (fresh processes)",
           "step ms", LOWER, fmt.ms, TIME),
    Metric("images_per_s", "images/s", "batch size / step_ms", "images/s", HIGHER, fmt.count),
    Metric("step_gflop", "GFLOP", "model FLOPs of one training step at the cell's batch size, counted from the spec "
           "(models/flops.py; docs/performance.md, Counting FLOPs): every layer forward and backward and the loss, "
           "a multiply-add as 2; the optimizer update is not counted", form=_decimals(4)),
    Metric("gflops", "GFLOP/s", "achieved model FLOP rate: step_gflop / step_ms (the cell's median step)", "GFLOP/s",
           HIGHER, _decimals(1)),
    Metric("mfu", "fraction", "model FLOPs utilisation: gflops / the machine's peak, the larger of the run's start "
           "and end calibrations' matmul_gflops (float32 NumPy matmul, 512x512); can exceed 1 where a framework's "
           "kernels beat that probe or multiply fewer than the model's FLOPs (Winograd convs); null on a GPU or a dtype "
           "other than float32, which the probe does not measure",
           "% of peak", HIGHER, fmt.percent),
    Metric("flop_limited_ms", "ms", "the step time at the machine's peak: step_gflop / the peak mfu divides by; the "
           "floor a FLOP-bound step could reach (step_ms = flop_limited_ms / mfu); null where mfu is", form=fmt.ms),
    Metric("step_ms_iqr", "ms", "interquartile range of one run's timed calls, per step"),
    Metric("first_step_s", "s", "wall time of the first call on a fresh model, synchronized: includes compilation "
           "(one step, or steps_per_call steps for a fused mode)", form=lambda v: fmt.seconds(v, 3)),
    Metric("compile_s", "s", "first_step_s minus an ordinary call of the same number of steps: compilation and "
           "first touch", "compile s", LOWER, lambda v: fmt.seconds(v, 3)),
    Metric("import_s", "s", "wall time of importing the backend and its framework in the run's fresh process "
           "(backends.load), before any model is built; NumPy and fwbench itself are already imported",
           form=lambda v: fmt.seconds(v, 2)),
    Metric("steps_per_call", "steps", "steps per timed call: 1, or the timed steps for a fused mode", form=fmt.count),
    Metric("epoch_s", "s", "median training time of the recipe's epochs after the first (null with one epoch); the "
           "epoch's batches are on the device before its clock starts, and test evaluations are off the clock",
           "epoch s", LOWER, fmt.seconds, TIME, training=True),
    Metric("first_epoch_s", "s", "training time of the first epoch, tracing and compilation included",
           form=fmt.seconds, training=True),
    Metric("epoch_s_each", "s", "training time of every epoch, the first included", training=True),
    Metric("peak_rss_mb", "MiB", "high-water mark of the run's own process image (VmHWM in /proc/self/status, which "
           "exec resets) after step timing; the cell's figure is the median over its runs; a data-parallel cell's is "
           "the sum of its workers' (workers_peak_rss_mb) and of the process driving them (driver_peak_rss_mb); the "
           "NumPy engine's worker processes are added in (helpers_peak_rss_mb)",
           "peak MB", LOWER, fmt.count, MEMORY, ("smaller", "larger")),
    Metric("train_peak_rss_mb", "MiB", "VmHWM at the end of the training run: data, framework, model and the whole "
           "recipe (with helpers_peak_rss_mb's processes, read again then)", "train peak MB", LOWER, fmt.count, None, training=True),
    Metric("gpu_peak_mb", "MiB", "the framework's peak allocated device memory (torch max_memory_allocated, XLA "
           "peak_bytes_in_use); null on the CPU", "GPU peak MB", LOWER, fmt.count),
    Metric("test_accuracy", "fraction", "test accuracy after the recipe's last epoch", "accuracy", HIGHER,
           fmt.percent, ACCURACY, ("higher", "lower"), training=True),
    Metric("accuracy_target", "fraction", "the course's published accuracy for the model", form=fmt.percent,
           training=True),
    Metric("time_to_accuracy_s", "s", "training time until the test accuracy, evaluated evals_per_epoch times an "
           "epoch, first reached the target; null if never", "time to accuracy s", LOWER,
           lambda v: fmt.seconds(v, 1), training=True),
    Metric("workers", "workers", "a data-parallel cell's workers (processes or devices), over which its batch, the "
           "global batch, is split in contiguous slices", form=fmt.count),
    Metric("threads_per_worker", "threads", "a data-parallel cell's compute threads in each worker", form=fmt.count),
    Metric("slowest_worker_step_ms", "ms", "a data-parallel cell's step as its slowest worker saw it: per timed step "
           "the largest of the workers' own step times (each waits for the others at the all-reduce), median over "
           "steps", form=fmt.ms),
    Metric("images_per_s_per_worker", "images/s", "images_per_s / workers", form=fmt.count),
    Metric("helpers_peak_rss_mb", "MiB", "each helper process's own high-water mark (VmHWM less the shared memory "
           "the cell's process counts), for a backend that runs helpers beside the cell's process (the NumPy engine's "
           "worker processes); included in peak_rss_mb"),
    Metric("workers_peak_rss_mb", "MiB", "each worker's process high-water mark (VmHWM), rank 0 first; a "
           "data-parallel cell's peak_rss_mb is their sum, plus driver_peak_rss_mb"),
    Metric("driver_peak_rss_mb", "MiB", "the high-water mark (VmHWM) of a data-parallel cell's own process where it "
           "only drives workers of their own (flax@dp on a CPU); null where it is a worker itself", form=fmt.count),
    Metric("weak_scaling_efficiency", "fraction", "fwbench's own derived metric, not an MLPerf or AlgoPerf one: "
           "images_per_s with N workers / (N x images_per_s of the same backend with 1 worker at the per-worker "
           "batch, batch_size / N), from the run's 1-worker baseline cell; 1 is perfect weak scaling",
           form=fmt.percent),
    Metric("scaling_note", "text", "why a data-parallel cell's figures are not a scaling measurement (workers x "
           "threads above the cores); null when they are one", form=str),
    Metric("agreement_worst_rel_l2", "ratio", "worst relative L2 difference of any gradient, logits or loss of this "
           "backend and mode against the float64 NumPy reference: fwbench agree, float32, one MNIST batch of 32",
           "worst grad diff", LOWER, fmt.sci),
]
BY_KEY = {m.key: m for m in REGISTRY}
# The model table's columns, in order; peak MB shows GPU memory beside host memory.
SHOW = {"peak_rss_mb": _memory, "time_to_accuracy_s": _time_to_accuracy}
COLUMNS = [BY_KEY[k] for k in ("step_ms", "images_per_s", "gflops", "mfu", "epoch_s", "compile_s", "peak_rss_mb",
                                "test_accuracy", "time_to_accuracy_s", "agreement_worst_rel_l2")]


def show(metric: Metric, values: dict) -> str:
    """The metric of one cell's metrics dict as table text."""
    if metric.key in SHOW:
        return SHOW[metric.key](values)
    return metric.form(values.get(metric.key))


def documented() -> dict:
    """The metrics block of a results file: unit, method, direction and judging of each."""
    return {m.key: {"unit": m.unit, "how": m.how, "better": m.better, "judged": m.judged} for m in REGISTRY}
