"""`fwbench bench`: the backend x model x batch-size matrix, one fresh process per cell."""
