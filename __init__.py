"""fwbench: one model spec, many deep-learning frameworks. Installed as fwbench.backends, .models and .harness."""
import os
import sys

# OpenBLAS's idle threads spin for about 0.1 s after each call before they sleep, on the cores that the NumPy
# engine's own threads need next. It reads how long once, when NumPy loads it, so this is set first thing: where
# it took effect, engine/parallel.py lends BLAS the cores for a large GEMM. A user's own setting is kept.
BLAS_THREADS_SLEEP = "numpy" not in sys.modules and os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4") == "4"
