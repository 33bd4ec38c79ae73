"""fwbench harness: data, training loop and the command line."""
