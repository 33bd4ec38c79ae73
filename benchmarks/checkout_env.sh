# Sourced by the GPU scripts: an uninstalled checkout (the device machine) importable as the package it installs
# as, `fwbench`, through a link to the repository root (ahead of any carried wheels' folder already on the path);
# and unbuffered output, so a cut-off call keeps its lines.
shim=$(mktemp -d)
ln -s "$PWD" "$shim/fwbench"
export PYTHONPATH=$shim${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
