"""Suite presets and the cells they expand to."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from harness.recipe import RECIPES, Recipe


@dataclass(frozen=True)
class Suite:
    name: str
    models: tuple[str, ...] = ("cnn", "mlp")
    backends: tuple[str, ...] = ("numpy", "torch", "flax")
    batch_sizes: tuple[int, ...] = (64,)
    device: str = "cpu"
    repeat: int = 1
    timed_steps: int = 50
    warmup_steps: int = 5
    train: bool = True            # run the recipe for accuracy, time-to-accuracy, epoch time and curves
    limit: int | None = None      # train on the first N images (quick looks), None for all of MNIST
    epochs: int | None = None     # override the recipe's epochs
    evals_per_epoch: int = 2      # test-set evaluations per epoch, to find the time-to-accuracy (off the clock)
    allow_nonconformant: bool = False  # bench a plugin even when it fails the conformance kit (rows are marked)


# Each mode is its own row. torch@channels_last is left out of the CPU presets because it made no
# difference on the reference CPU (0.95-0.99x eager on the cnn); `full` has every mode.
CPU_MODES = ("numpy", "torch", "torch@compile", "flax", "flax@scan")
PRESETS = {
    # About a minute on 2 cores: the real models, one short epoch on a slice of MNIST.
    "quick": Suite("quick", backends=("numpy", "torch", "flax", "flax@scan"), timed_steps=20, warmup_steps=3,
                   limit=6400, epochs=1, evals_per_epoch=2),
    # `make bench`: the default recipes on all of MNIST, every metric, on the CPU.
    "default": Suite("default", backends=CPU_MODES),
    # More batch sizes, repeats, every mode, and the GPU where there is one.
    "full": Suite("full", backends=("numpy", "torch", "torch@channels_last", "torch@compile", "flax", "flax@scan"),
                  batch_sizes=(64, 512), device="auto", repeat=3, timed_steps=100),
    # benchmarks/gpu_bench.sh on the device machine: the modes that remove launch overhead, on cuda.
    "gpu": Suite("gpu", backends=("numpy", "torch", "torch@compile", "torch@cudagraphs", "flax", "flax@scan"),
                 device="cuda", timed_steps=100),
}
# The accuracy each model's recipe is judged by: the course's published figures.
TARGETS = {"cnn": 0.985, "mlp": 0.970}


@dataclass(frozen=True)
class Cell:
    backend: str
    model: str
    batch_size: int
    device: str
    repeat: int
    timed_steps: int
    warmup_steps: int
    train: bool                   # only at the recipe's own batch size, and only on the first repeat
    limit: int | None
    recipe: dict
    target: float | None
    evals_per_epoch: int
    dtype: str = "float32"
    seed: int = 0

    def label(self) -> str:
        return f"{self.backend} {self.model} b{self.batch_size} {self.device}" + (f" #{self.repeat + 1}" if self.repeat else "")

    def to_dict(self) -> dict:
        return asdict(self)


def recipe_of(model: str, suite: Suite) -> Recipe:
    recipe = RECIPES.get(model, Recipe())
    return replace(recipe, epochs=suite.epochs) if suite.epochs else recipe


def cells(suite: Suite) -> list[Cell]:
    """The matrix in run order: repeat, then model, then batch size, then backend (backends back to back)."""
    out = []
    for r in range(suite.repeat):
        for model in suite.models:
            recipe = recipe_of(model, suite)
            for bs in suite.batch_sizes:
                for backend in suite.backends:
                    trains = suite.train and r == 0 and bs == recipe.batch_size
                    out.append(Cell(backend, model, bs, suite.device, r, suite.timed_steps, suite.warmup_steps,
                                    trains, suite.limit, asdict(recipe), TARGETS.get(model), suite.evals_per_epoch))
    return out
