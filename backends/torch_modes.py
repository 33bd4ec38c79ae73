"""The torch backend's compiled training step (modes compile and cudagraphs), built on its first call."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# torch.compile mode per execution mode; how each handles the ragged last batch:
# compile: the batch dimension is marked dynamic (TorchBackend.prepare_batch), so the epoch's 32-image last
# batch reuses the first graph. Measured on 2 CPU cores, cold cache: a static graph recompiles for it (3-5 s,
# hidden in epoch 1), while the symbolic graph's steps were 2-4% slower, under 1 s over the 5-epoch cnn recipe.
# cudagraphs: a CUDA graph is recorded per input shape whatever dynamo does, so static graphs, one per size.
COMPILE = {"compile": None, "cudagraphs": "reduce-overhead"}
# Batch norm and dropout: the step always runs in training mode (forward() and loss_and_grads run the model
# eagerly), so the guard on module.training never fails. Harness masks are module attributes: see set_masks.


def lr_tensor(lr: float, device: torch.device) -> torch.Tensor:
    """The lr as a 0-d tensor on the device: set_lr fills it in place, so a compiled step never recompiles for it."""
    # A float lr is a constant in the traced optimizer step: each cosine step would recompile it.
    # float64, as eager torch.optim computes a float lr's step size in Python.
    return torch.tensor(lr, dtype=torch.float64, device=device)


def prime_state(opt: torch.optim.Optimizer) -> None:
    """Create SGD momentum buffers and Adam's moments and float64 step count up front, as the first step would."""
    # torch.optim creates its state on the first step; the compiled step guards on the state being
    # empty, so it would compile again on the second step, where the harness's warm-up hides it.
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state[p]
            if isinstance(opt, torch.optim.SGD) and group["momentum"]:
                state.setdefault("momentum_buffer", torch.zeros_like(p))  # 0 * m + g == g: the same first update
            elif isinstance(opt, torch.optim.Adam) and not state:
                # torch.optim makes `step` a float32 tensor. Eager Adam reads it with .item() and computes
                # 1 - beta2**step in Python floats, but a compiled step keeps it a tensor, so the bias
                # corrections came out in float32: 1 - 0.999**1 off by 1.3e-5 relative, every update off by
                # ~7e-6 even in float64. A float64 step computes them as eager does, in double.
                where = p.device if group["capturable"] else torch.device("cpu")  # where Adam itself puts it
                state["step"] = torch.zeros((), dtype=torch.float64, device=where)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


class CompiledStep:
    """Forward+loss and the optimizer update, each torch.compile'd lazily; backward runs the compiled backward graph."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, mode: str):
        self.cudagraphs = mode == "cudagraphs"
        kwargs = {"mode": COMPILE[mode]} if COMPILE[mode] else {}
        # dynamic=False in cudagraphs mode: each shape is its own graph anyway; in compile mode None lets
        # the batch dimension marked dynamic in prepare_batch stay symbolic.
        dynamic = False if self.cudagraphs else None

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(model(x), y)

        def update() -> None:
            opt.step()

        self.opt = opt
        prime_state(opt)
        self.loss = torch.compile(loss, dynamic=dynamic, **kwargs)
        # The torch docs compile opt.step as its own function: the whole update becomes a few fused loops
        # (CPU) or kernels (CUDA), and in cudagraphs mode one graph replay.
        self.update = torch.compile(update, **kwargs)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One update; the returned loss is the caller's own tensor, safe to hold across later steps."""
        if self.cudagraphs:
            # A new iteration: the previous replay's outputs (loss, grads) may now be overwritten.
            torch.compiler.cudagraph_mark_step_begin()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(x, y)
        loss.backward()
        self.update()
        # Under CUDA graphs the loss lives in the graph's memory pool and the next replay overwrites it.
        return loss.detach().clone() if self.cudagraphs else loss.detach()
