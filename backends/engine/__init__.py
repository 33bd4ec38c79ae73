"""A from-scratch reverse-mode autograd engine on NumPy arrays, or CuPy ones (the same code; see xp.py)."""
from backends.engine.conv import conv2d
from backends.engine.conv_pool import conv2d_maxpool
from backends.engine.ops import cross_entropy, dense, flatten, relu
from backends.engine.optim import SGD, Adam
from backends.engine.pool import maxpool2d
from backends.engine.tensor import Tensor

__all__ = ["Adam", "SGD", "Tensor", "conv2d", "conv2d_maxpool", "cross_entropy", "dense", "flatten", "maxpool2d", "relu"]
