"""fwbench: one model spec, many deep-learning frameworks. Installed as fwbench.backends, .models and .harness."""
import os
import sys

# OpenBLAS's idle threads spin for about 0.1 s after each call before they sleep, on the cores that the NumPy
# engine's own threads need next. It reads how long once, when NumPy loads it, so this is set first thing: where
# it took effect, engine/parallel.py lends BLAS the cores for a large GEMM. A user's own setting is kept.
# 2^20 cycles, about 0.4 ms here: a dense layer's next GEMM finds the threads still awake, where at 2^4 (sleep at
# once) each call waited ~100 us to wake one (a 64 x 784 by 784 x 512 GEMM on two threads: 425 us against 325).
# Steps in fresh processes against 2^4, 6-12 alternating rounds: dmlp 0.89-0.96x the time (four runs), mlp 0.96-0.98x,
# strided 0.94x, the conv specs 0.97-1.05x (noise); 2^22 slowed flaxex 1.17x (the spin takes the convs' cores).
# An earlier session read dmlp 1.04-1.11x at 2^18-2^20 (docs/performance.md), before Adam and the GIL interval changed.
BLAS_TIMEOUT = "20"
BLAS_THREADS_SLEEP = ("numpy" not in sys.modules
                      and os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", BLAS_TIMEOUT) == BLAS_TIMEOUT)
