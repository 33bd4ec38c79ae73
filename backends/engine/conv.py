"""2-D convolution on channels-last (NHWC) arrays: im2col and one GEMM per slice of images, and col2im backward."""
from __future__ import annotations

import weakref
from functools import partial

import numpy as np

from fwbench.backends.engine import parallel, rowblocks, winograd
from fwbench.backends.engine.activations import ACTIVATIONS
from fwbench.backends.engine.epilogue import Epilogue, images, longest, runs_of
from fwbench.backends.engine.input_gradient import InputGradient
from fwbench.backends.engine.patches import patches
from fwbench.backends.engine.pool import POOLS
from fwbench.backends.engine.tensor import Tensor
from fwbench.backends.engine.xp import module_of

Pads = tuple[int, int, int, int]  # zeros (top, bottom, left, right); an int n means n on every side

# The images of a slice are as many as keep its im2col block (the GEMM's left operand) about this size: the block
# is written and read twice while it is still in cache, and the GEMM's rows stay many. Measured on the 2-core
# reference CPU (pyex's second conv, forward and backward): 1 MiB 15 + 41 ms, whole batch 31 + 81 ms.
SLICE_BYTES = 1 << 20
# Below this many input channels, im2col copies whole output rows (channel-major block) rather than runs of C
# channels (pixel-major): a one-channel image would otherwise be copied one float at a time.
FEW_CHANNELS = 4
# The forward pass keeps its im2col for the backward pass when the whole batch's is at most this large; above it, the
# backward pass cuts it again slice by slice. pyex's second conv (42 MiB kept): 0.90x the time; tgmnist's (82 MiB) no
# faster kept, read back from memory, than cut again in cache.
KEEP_COLS_BYTES = 64 << 20


def conv2d(x: Tensor, w: Tensor, b: Tensor, stride: int = 1, padding: int | Pads = 0, relu: bool = False,
           pool: tuple[str, int, int] | None = None, act: str | None = None, after: str | None = None) -> Tensor:
    """Cross-correlate NHWC x with w (out, in, kh, kw) and add b (out,); then act, pool and after, as asked.

    Each slice of images goes through all of them while it is in cache. act (relu, tanh, sigmoid) is applied to the
    conv's output, and kept for the backward pass when a pool follows; pool = (max or avg, size, stride) pools it;
    after (relu, tanh) is applied to what comes out, its gradient read from its own output; relu = True is
    after = "relu". relu then max pool is written as max pool then relu, which is the same, tie rule included (the
    first max wins either way when it is > 0, and passes nothing otherwise, as relu'(0) = 0), and keeps nothing at
    full size; tanh then max pool as max pool then tanh, see numpy_backend._fused.
    """
    after = "relu" if relu else after
    check_channels(x, w)
    # Both passes go to the worker processes when the forward pass's work is large enough: its FLOPs, as the direct
    # conv computes them, and its output's values, which the activation and pool pass over in many calls (what makes
    # threads wait on each other for the GIL). The arrays they hand over are then made in shared memory.
    oh, ow = conv_out_size(x.shape[1:3], *w.shape[2:], stride, padding)
    values = x.shape[0] * oh * ow * w.shape[0]
    shared = parallel.remote(values * 2 * int(np.prod(w.shape[1:])) + parallel.VALUE_FLOPS * values) \
        and module_of(x.data) is np
    xd = parallel.shareable(x.data) if shared else x.data
    by_winograd = winograd.applies(xd, w.shape, stride, pads(padding))
    conv = winograd.Winograd(xd, w, b, pads(padding), shared) if by_winograd else Conv(xd, w, b, stride, padding,
                                                                                        shared)
    xp, o, full = conv.xp, w.shape[0], (conv.n, conv.oh, conv.ow, w.shape[0])
    windows = POOLS[pool[0]](full, *pool[1:]) if pool else None
    # What a worker process writes is in shared memory; else the output is where the next conv can hand it on.
    empty = parallel.empty if shared else partial(parallel.output, xp=xp)
    y = empty((conv.n, windows.oh, windows.ow, o) if pool else full, w.dtype)
    arg = empty(y.shape, windows.index) if pool and windows.index else None
    post_grad = ACTIVATIONS[after][1] if after else None
    # Winograd's output transform may pool, when nothing comes between: the slice's pooled output and winners.
    by_conv = pool is not None and not act and by_winograd and conv.pools(windows)
    # What the pool reads, when the backward pass needs it: the activation's output.
    kept = empty(full, w.dtype) if pool and act else None
    runs = runs_of(conv.slices, int(np.prod(full[1:])) * w.dtype.itemsize)
    parallel.share(Forward(conv, y, arg, kept, windows, act, after, by_conv), runs, conv.work, remote=shared)
    act_grad = ACTIVATIONS[act][1] if act else None
    name = "_".join(part for part in ("conv2d", act, pool and pool[0] + "pool", after) if part)
    out = Tensor(y, _prev=(x, w, b), _op=name)

    def _backward(g):
        # Pooled by the conv, the epilogue stops at the pool: the conv routes the gradient to the winners in arg.
        g = xp.ascontiguousarray(g)
        epilogue = Epilogue(post_grad, y, None if by_conv else windows, arg, act_grad,
                            y if act and not pool else kept, runs)
        conv.backward(x, w, b, parallel.shareable(g) if shared else g, epilogue)
    out._backward = _backward
    return out


class Forward:
    """conv2d's forward pass over a worker's runs of slices: each slice's conv, act, pool and after, while in cache."""

    def __init__(self, conv, y, arg, kept, windows, act: str | None, after: str | None, by_conv: bool):
        self.conv, self.y, self.arg, self.kept, self.windows = conv, y, arg, kept, windows
        self.act, self.after, self.by_conv = act, after, by_conv

    def __call__(self, _: int, mine: list[list[slice]]) -> None:
        conv, y, arg, kept, windows, act = self.conv, self.y, self.arg, self.kept, self.windows, self.act
        activate = ACTIVATIONS[act][0] if act else None
        post = ACTIVATIONS[self.after][0] if self.after else None
        pool, full = windows is not None, (conv.n, conv.oh, conv.ow, y.shape[-1])
        scratch = conv.scratch()
        before_pool = conv.xp.empty((longest(mine), *full[1:]), dtype=y.dtype) if pool and not act and not \
            self.by_conv else None
        for run in mine:
            r = images(run)
            if self.by_conv:
                for s in run:
                    conv.forward(s, scratch, y[s], arg[s])
            else:
                zr = y[r] if not pool else kept[r] if act else before_pool[:r.stop - r.start]
                for s in run:
                    z = zr[s.start - r.start:s.stop - r.start]
                    conv.forward(s, scratch, z)
                    if act:  # while the slice's output is still in cache
                        activate(z, z)
                if pool:
                    windows.forward(zr, y[r], None if arg is None else arg[r])
            if post:
                post(y[r], y[r])


class Conv:
    """One conv2d call's geometry, its weight and bias as a (kh*kw*C + 1, O) matrix, and its slices of images.

    With row blocks (rowblocks.py), each im2col row is the window of B output pixels of a row, and the GEMM's weight
    is `wide`, B*O columns; otherwise `wide` is wb."""

    def __init__(self, x: np.ndarray, w: Tensor, b: Tensor, stride: int, padding: int | Pads, shared: bool = False):
        self.xp, self.shared = module_of(x), shared  # shared: its arrays in shared memory, for a worker process
        empty = parallel.empty if shared else self.xp.empty
        self.x, self.stride, self.pads = x, stride, pads(padding)
        self.n, h, wd, self.c = x.shape
        o, _, self.kh, self.kw = w.shape
        self.oh, self.ow = conv_out_size((h, wd), self.kh, self.kw, stride, self.pads)
        self.k = self.kh * self.kw * self.c
        # Row (i, j, c) of wb is w[:, c, i, j], the order of an im2col row's patch below, and its last row is the
        # bias, against a last im2col column of ones.
        self.wb = empty((self.k + 1, o), w.dtype)
        self.wb[:-1] = w.data.transpose(2, 3, 1, 0).reshape(self.k, o)
        self.wb[-1] = b.data
        # Off the CPU a GEMM's width is not what limits it: row blocks there would only add FLOPs.
        self.block = rowblocks.block_size(o, self.ow, stride, self.k) if self.xp is np else 1
        self.wide = self.wb
        if self.block > 1:
            self.wide = empty((self.kh * (self.block + self.kw - 1) * self.c + 1, self.block * o), w.dtype)
            self.wide[:-1] = rowblocks.widen(w.data, self.block)
            self.wide[-1] = np.tile(b.data, self.block)
        self.row = self.wide.shape[0]  # an im2col row: its window and a last 1, for the bias
        self.channel_major = self.c < FEW_CHANNELS and self.block == 1  # im2col stored transposed (cols())
        self.per_image = self.oh * self.ow // self.block * self.row
        self.slices = image_slices(self.n, self.per_image * x.itemsize, self.xp)
        m = self.slices[0].stop
        # The forward pass's work in GEMM FLOPs, its im2col included: a one-channel conv's few FLOPs still come with
        # a large im2col (lenet5's first: 16 M FLOPs and 1.3 M values to copy), which is worth sharing.
        self.work = (2 * self.wide.shape[1] + parallel.VALUE_FLOPS) * self.n * self.per_image
        # The forward pass's im2col kept for the backward pass, or each worker's block rewritten in both.
        self.keep = self.n * self.per_image * x.itemsize <= KEEP_COLS_BYTES
        self.kept, self.lent = lend(w, self.n * self.per_image, x.dtype, empty) if self.keep else (None, None)
        top, bottom, left, right = self.pads
        self.padded_shape = (m, h + top + bottom, wd + left + right, self.c)
        # The patches of the whole batch, one view for every slice (as_strided costs ~15 us a call); padded, each
        # worker's buffer has its own.
        self.patches = None if any(self.pads) else self.patches_of(x)

    def forward(self, s: slice, scratch: tuple, z: np.ndarray) -> None:
        """The conv's output for slice s into z (images, OH, OW, O), bias added."""
        # The rows are NHWC as they come (no transpose), the bias added by the GEMM itself.
        self.xp.matmul(self.cols(s, scratch), self.wide, out=z.reshape(-1, self.wide.shape[1]))

    def patches_of(self, xpad: np.ndarray) -> np.ndarray:
        """The (m, OH, OW/B, kh, B + kw - 1, C) view of padded NHWC xpad: [n, r, q] is row block q's window."""
        return patches(xpad, self.kh, self.kw, self.stride, self.oh, self.ow, self.block)

    def scratch(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """A worker's own buffers: its im2col block (or the kept one), its padded slice (or None) and its patches."""
        xp, m = self.xp, self.slices[0].stop
        block = self.kept if self.keep else xp.empty(m * self.per_image, dtype=self.x.dtype)
        if not any(self.pads):
            return block, None, self.patches
        # Each slice is padded into one buffer whose border stays zero: no padded copy of the whole batch.
        padded = xp.zeros(self.padded_shape, dtype=self.x.dtype)
        return block, padded, self.patches_of(padded)

    def _patches(self, s: slice, padded: np.ndarray | None, view: np.ndarray) -> np.ndarray:
        """The patches of slice s: of x itself, or of its images padded in the worker's buffer."""
        if padded is None:
            return view[s]
        top, _, left, _ = self.pads
        m, h, wd = s.stop - s.start, self.x.shape[1], self.x.shape[2]
        padded[:m, top:top + h, left:left + wd] = self.x[s]
        return view[:m]

    def cols(self, s: slice, scratch: tuple, again: bool = False) -> np.ndarray:
        """im2col of slice s: (m*OH*OW/B, self.row), one row per output pixel (or row block), a last column of ones.

        scratch: the worker's buffers; again: the backward pass asking for the forward pass's block, as it was kept."""
        m, k = s.stop - s.start, self.row - 1
        block, padded, view = scratch
        start = s.start * self.per_image if self.keep else 0
        flat = block[start:start + m * self.per_image]
        if again and self.keep:
            return flat.reshape(k + 1, -1).T if self.channel_major else flat.reshape(-1, k + 1)
        view = self._patches(s, padded, view)  # (m, OH, OW/B, kh, B + kw - 1, C)
        if self.channel_major:
            # Stored transposed, (K + 1, m*OH*OW): each copy is a run along an image row. BLAS takes the transpose.
            block = flat.reshape(k + 1, -1)
            block[:-1].reshape(self.kh, self.kw, self.c, m, self.oh, self.ow)[...] = view.transpose(3, 4, 5, 0, 1, 2)
            block[-1] = 1
            return block.T
        block = flat.reshape(-1, k + 1)
        block[:, :-1].reshape(view.shape)[...] = view
        block[:, -1] = 1
        return block

    def backward(self, x: Tensor, w: Tensor, b: Tensor, g: np.ndarray, after: Epilogue) -> None:
        """Accumulate the gradients of w, b and (when it needs one) x from g, the NHWC gradient at the output."""
        xp, o = self.xp, w.shape[0]
        dx = (parallel.empty if self.shared else parallel.output)(x.shape, g.dtype, xp) if x.requires_grad else None
        work = partial(self.gradients, g, dx, after, w.requires_grad or b.requires_grad)
        # Summed in worker order: the same order every step.
        gwb, *others = parallel.share(work, after.runs, 2 * self.work, remote=self.shared)
        for other in others:
            gwb += other
        if self.block > 1:
            gwb = rowblocks.fold(gwb, self.block, self.kh, self.kw, self.c)
        if w.requires_grad:
            w.accumulate(xp.ascontiguousarray(gwb[:, :-1].reshape(o, self.kh, self.kw, self.c).transpose(0, 3, 1, 2)))
        if b.requires_grad:
            b.accumulate(gwb[:, -1].copy())
        if dx is not None:
            x.accumulate(dx)
        if self.lent is not None:
            self.lent[1] = False  # the kept block may serve the next step

    def gradients(self, g: np.ndarray, dx: np.ndarray | None, after: Epilogue, weights: bool, _: int,
                  mine: list[list[slice]]) -> np.ndarray:
        """A worker's runs: their input gradients into dx; returns the sum of their weight gradients (if weights)."""
        # The weight gradient (O, kh*kw*C), and the bias's in the last column. Computed as g.T @ cols, not as
        # cols.T @ g: OpenBLAS runs the wide product 1.4-2.4x faster here on 500+ patch columns (tgmnist, pyex).
        # But a channel-major block (a conv of few input channels) is (K + 1, pixels) as it lies, and there
        # block @ g, (K + 1, O), ran 1.5-1.7x faster than g.T @ block.T (25088 pixels, K + 1 = 10, 16 and 32
        # outputs: 157 against 264 us, 338 against 502, one thread): summed transposed, turned at the end.
        xp, o = self.xp, g.shape[-1]
        gwb = xp.zeros(self.wide.shape if self.channel_major else self.wide.shape[::-1], dtype=g.dtype)
        part, scratch = xp.empty_like(gwb), self.scratch()
        pooled = after.windows is not None
        unpooled = xp.empty((longest(mine), self.oh, self.ow, o), dtype=g.dtype) if pooled else None
        back = InputGradient(self, dx, o) if dx is not None else None
        for run in mine:
            r = images(run)
            gr = after.grad(g[r], r, unpooled[:r.stop - r.start] if pooled else None)
            for s in run:
                gs = gr[s.start - r.start:s.stop - r.start].reshape(-1, o)
                if weights:
                    cols = self.cols(s, scratch, again=True)
                    if self.channel_major:
                        xp.matmul(cols.T, gs, out=part)
                    else:
                        xp.matmul(gs.reshape(-1, part.shape[0]).T, cols, out=part)
                    gwb += part
                if back is not None:
                    back.add(s, gs)
        return gwb.T if self.channel_major else gwb


# Each conv weight's kept im2col block, reused from step to step while that weight lives: [block, in use, what made
# it]. A block
# over glibc's 32 MiB mmap threshold (pyex's second conv keeps 42 MiB) is otherwise page-faulted in afresh every
# step, and writing fresh pages took 2-3x the time of writing reused ones here (82 MiB: 23-36 ms against 10-12).
_kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def lend(w: Tensor, size: int, dtype, empty) -> tuple[np.ndarray, list]:
    """A block of `size` for w's conv to keep from its forward to its backward pass, and its entry to release.

    empty: what makes the block (np.empty, cupy's, or parallel.empty for a block in shared memory)."""
    entry = _kept.get(w)
    # In use: the same weight in a second conv before the first one's backward pass (or a forward pass that had
    # none, as in evaluation); that conv gets a block of its own.
    if entry is None or entry[1] or entry[0].size < size or entry[0].dtype != dtype or entry[2] is not empty:
        entry = _kept[w] = [empty(size, dtype), False, empty]
    entry[1] = True
    return entry[0][:size], entry


def image_slices(n: int, bytes_per_image: int, xp=np) -> list[slice]:
    """Consecutive slices of n images, about SLICE_BYTES each; one slice of all n off the CPU."""
    # The slices are for the CPU's cache; on a GPU they would only multiply kernel launches.
    return parallel.slices(n, SLICE_BYTES // max(bytes_per_image, 1), xp)


def check_channels(x: Tensor, w: Tensor) -> None:
    assert x.shape[3] == w.shape[1], f"conv2d: input has {x.shape[3]} channels, weight expects {w.shape[1]}"


def pads(padding: int | Pads) -> Pads:
    """(top, bottom, left, right) of an int or a 4-tuple."""
    return (padding,) * 4 if isinstance(padding, int) else tuple(padding)


def conv_out_size(hw: tuple[int, int], kh: int, kw: int, stride: int, padding: int | Pads) -> tuple[int, int]:
    """(OH, OW) of a conv over an (H, W) image."""
    top, bottom, left, right = pads(padding)
    h, w = hw[0] + top + bottom, hw[1] + left + right
    return (h - kh) // stride + 1, (w - kw) // stride + 1
