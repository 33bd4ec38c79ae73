"""fwbench: one model spec, many deep-learning frameworks. Installed as fwbench.backends, .models and .harness."""
