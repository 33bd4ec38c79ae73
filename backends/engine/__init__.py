"""A from-scratch reverse-mode autograd engine on NumPy or CuPy arrays; images channels last inside (see layout.py)."""
from fwbench.backends.engine.conv import conv2d
from fwbench.backends.engine.norm import batchnorm, dropout
from fwbench.backends.engine.ops import cross_entropy, dense, flatten, relu, sigmoid, tanh
from fwbench.backends.engine.optim import SGD, Adam
from fwbench.backends.engine.pool import avgpool2d, maxpool2d
from fwbench.backends.engine.tensor import Tensor

__all__ = ["Adam", "SGD", "Tensor", "avgpool2d", "batchnorm", "conv2d", "cross_entropy", "dense",
           "dropout", "flatten", "maxpool2d", "relu", "sigmoid", "tanh"]
