"""Where a cell's runs execute: a fresh child process here (the default), or a submitit job (a local process, or one
Slurm job per run on a cluster), each returning the same record."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fwbench.backends.messages import one_line

EXECUTORS = ("process", "submitit")


@dataclass(frozen=True)
class Dispatch:
    executor: str = "process"       # process: a child process per run; submitit: a submitit job per run
    cluster: str | None = None      # submitit's: None picks Slurm where it is installed, else local; or local, slurm
    partition: str | None = None    # Slurm partition
    gpus_per_cell: int = 0          # GPUs each job asks for (gpus_per_node)
    exclusive: bool = False         # Slurm: a node to itself, so no other job shares its cores while it is timed
    folder: str | None = None       # submitit's pickles and logs; None: submitit/ beside the results file


_executors: dict = {}


def executor(dispatch: Dispatch, folder: Path, timeout_s: float):
    """The submitit executor for these settings, made once per bench."""
    key = (dispatch, str(folder), timeout_s)
    if key not in _executors:
        import submitit  # only a submitit bench needs it
        ex = submitit.AutoExecutor(folder=folder, cluster=dispatch.cluster)
        params: dict = {"timeout_min": max(1, math.ceil(timeout_s / 60)), "name": "fwbench-cell"}
        if dispatch.gpus_per_cell:
            params["gpus_per_node"] = dispatch.gpus_per_cell
        if ex.cluster == "slurm":
            params |= {"slurm_partition": dispatch.partition} if dispatch.partition else {}
            params |= {"slurm_exclusive": True} if dispatch.exclusive else {}
        ex.update_parameters(**params)
        _executors[key] = ex
    return _executors[key]


def run_job(cell, folder: Path, dispatch: Dispatch) -> dict:
    """One run of the cell as a submitit job, waited for: its result, with the node's machine, or why it failed."""
    from fwbench.harness.bench.cell import job
    ex = executor(dispatch, folder, cell.timeout_s)
    submitted = ex.submit(job, cell.to_dict())
    try:
        return submitted.result()
    except Exception as e:  # the job died (killed, timed out, out of memory): its error, and where its log is
        return {"status": "error", "error": f"submitit job {submitted.job_id} failed: {one_line(e)} "
                                            f"(its log is in {folder})"}
