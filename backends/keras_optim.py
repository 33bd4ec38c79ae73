"""torch.optim's SGD and Adam written in TensorFlow ops, for the keras backend's variables."""
from __future__ import annotations

import keras  # imported by keras_backend first, which sets KERAS_BACKEND
import tensorflow as tf

from fwbench.backends.base import BackendError, OptimizerConfig

OPTIMIZERS = ("sgd", "adam")


class TorchRule:
    """One optimizer's state as tf.Variables, updated by apply(grads, lr) inside or outside a tf.function."""

    def __init__(self, config: OptimizerConfig, variables: list[tf.Variable]):
        if config.name not in OPTIMIZERS:
            raise BackendError(f"keras backend: unknown optimizer '{config.name}'; "
                               f"choose one of {', '.join(OPTIMIZERS)}")
        self.config, self.variables = config, variables
        zeros = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        more = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables] if config.name == "adam" else []
        self.first, self.second = zeros, more  # SGD's momentum buffers, or Adam's two moments
        # float64 like the Python floats torch.optim computes its bias corrections in.
        self.t = tf.Variable(0.0, dtype=tf.float64, trainable=False)

    def apply(self, grads: list[tf.Tensor], lr: tf.Tensor) -> None:
        """One update of every variable from its gradient; lr is a float64 scalar tensor."""
        if self.config.name == "sgd":
            self._sgd(grads, lr)
        else:
            self._adam(grads, lr)

    def _sgd(self, grads, lr) -> None:
        # v = momentum * v + g; p -= lr * v. The learning rate stays outside the buffer, as torch's does (Keras's
        # own SGD puts it inside, which differs as soon as the rate changes).
        momentum = self.config.momentum
        for p, g, v in zip(self.variables, grads, self.first):
            if momentum:
                v.assign(momentum * v + g)  # zeros at first: momentum * 0 + g == g, torch's first buffer
                g = v
            p.assign_sub(tf.cast(lr, p.dtype) * g)

    def _adam(self, grads, lr) -> None:
        b1, b2 = self.config.betas
        t = self.t.assign_add(1.0)
        # torch: step_size = lr / (1 - b1^t), denominator sqrt(v) / sqrt(1 - b2^t) + eps, both in double.
        step_size = lr / (1 - tf.pow(tf.constant(b1, tf.float64), t))
        root = tf.sqrt(1 - tf.pow(tf.constant(b2, tf.float64), t))
        for p, g, m, v in zip(self.variables, grads, self.first, self.second):
            # tf.constant, not tf.cast, for Python floats: tf.cast makes a float32 tensor of one first, and
            # 1 - beta1 came out 0.10000000149 in float64 (every update off by 9e-9 relative).
            dtype = p.dtype
            m.assign(m + (g - m) * tf.constant(1 - b1, dtype))      # torch's exp_avg.lerp_(grad, 1 - beta1)
            v.assign(v * tf.constant(b2, dtype) + g * g * tf.constant(1 - b2, dtype))
            denom = tf.sqrt(v) / tf.cast(root, dtype) + tf.constant(self.config.eps, dtype)
            p.assign_sub(tf.cast(step_size, dtype) * (m / denom))


class NativeRule:
    """Keras's own keras.optimizers.SGD or Adam at the config's hyperparameters, for the `native` mode."""

    def __init__(self, config: OptimizerConfig, variables: list):
        if config.name == "sgd":
            self.opt = keras.optimizers.SGD(learning_rate=config.lr, momentum=config.momentum)
        elif config.name == "adam":
            # The config's epsilon, not Keras's 1e-7: the mode shows Keras's rule, not another constant.
            self.opt = keras.optimizers.Adam(learning_rate=config.lr, beta_1=config.betas[0],
                                             beta_2=config.betas[1], epsilon=config.eps)
        else:
            raise BackendError(f"keras backend: unknown optimizer '{config.name}'; "
                               f"choose one of {', '.join(OPTIMIZERS)}")
        self.variables = variables  # Keras's own variables, which its optimizer keys its state by
        self.opt.build(variables)

    def apply(self, grads: list[tf.Tensor], lr: tf.Tensor) -> None:
        """One update through apply_gradients; Keras keeps its learning rate a float32 variable."""
        self.opt.learning_rate.assign(tf.cast(lr, self.opt.learning_rate.dtype))
        self.opt.apply_gradients(zip(grads, self.variables))
