"""argparse types that check every number and list where it is parsed; argparse names the option in the error."""
from __future__ import annotations

import argparse
import math

SEED_MAX = 2**32 - 1  # 32 bits: a range every framework's seeding accepts


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got '{text}'") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive(text: str) -> int:
    """An integer >= 1 (epochs, batch size, --limit, --repeat)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def count(text: str) -> int:
    """An integer >= 0 (--steps, where 0 means none)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def seed(text: str) -> int:
    """A seed in 0..2**32-1."""
    value = _int(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be between 0 and {SEED_MAX}, got {text}")
    return value


def learning_rate(text: str) -> float:
    """A finite number > 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def momentum(text: str) -> float:
    """SGD momentum in [0, 1): at 1 or more the velocity never decays, below 0 it flips sign every step."""
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1 (0.9 is usual), got {text}")
    return value


def names(example: str):
    """The type of a comma-separated list with at least one name, returned as given; `example` shows the form."""
    def check(text: str) -> str:
        if not [n for n in text.split(",") if n.strip()]:
            raise argparse.ArgumentTypeError(f"needs at least one name, e.g. {example}; got '{text}'")
        return text
    return check


def sizes(text: str) -> tuple[int, ...]:
    """Comma-separated positive integers, e.g. 64,512."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"takes positive whole numbers such as 64,512, got '{text}'")
    return tuple(int(p) for p in parts)


def add_workers(p) -> None:
    """--workers, for the data-parallel modes; the CLI passes it on in FWBENCH_WORKERS, which cell processes inherit."""
    p.add_argument("--workers", type=positive,
                   help="workers of a data-parallel mode (torch@ddp, flax@dp): processes on this machine, or "
                        "torchrun's WORLD_SIZE where it started fwbench (torch@ddp), or the GPUs of this process "
                        "(flax@dp); default: every GPU, or 2 on a CPU")
