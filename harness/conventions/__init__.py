"""`fwbench conventions`: framework conventions measured by running each framework, and their drift from fwbench's.

probes (framework-neutral readings), canonical / torch_ops / flax_ops / keras_ops (each framework's ops), drift,
document (the JSON), view (Markdown), command (the subcommand)."""
