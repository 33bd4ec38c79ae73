"""torch.optim's SGD and Adam as optax transformations, for the backends that run on JAX."""
from __future__ import annotations

import optax

from fwbench.backends.base import BackendError, OptimizerConfig

OPTIMIZERS = ("sgd", "adam")


def torch_rule(config: OptimizerConfig, dtype, backend: str) -> optax.GradientTransformation:
    """optax chain matching torch.optim; lr is optax.inject_hyperparams state, so set_lr never recompiles."""
    if config.name == "sgd":
        # optax.trace is t = g + mu * t, then scale by -lr: torch's SGD with dampening=0.
        # momentum=None (not 0.0) skips the trace entirely, as torch does.
        def make(learning_rate):
            return optax.sgd(learning_rate, momentum=config.momentum or None)
    elif config.name == "adam":
        # optax puts eps outside the sqrt (eps_root=0) with bias correction: torch's Adam rule;
        # only the rounding order differs (torch folds the corrections into lr and the denominator).
        def make(learning_rate):
            return optax.adam(learning_rate, b1=config.betas[0], b2=config.betas[1], eps=config.eps)
    else:
        raise BackendError(f"{backend} backend: unknown optimizer '{config.name}'; "
                           f"choose one of {', '.join(OPTIMIZERS)}")
    return optax.inject_hyperparams(make, hyperparam_dtype=dtype)(learning_rate=config.lr)
