"""Losses on batches. Each returns the loss *summed* over the rows and its gradient.

Sums (not means) are what partitions can add up; the driver divides by the
total row count.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


def one_hot(labels: np.ndarray, num_classes: int, dtype=np.float64) -> np.ndarray:
    """``(n,)`` integer labels -> ``(n, num_classes)`` one-hot rows."""
    Y = np.zeros((labels.shape[0], num_classes), dtype=dtype)
    Y[np.arange(labels.shape[0]), labels] = 1.0
    return Y


class Loss:
    name: ClassVar[str]
    #: True when the loss has an exact, cheaper gradient with respect to the
    #: logits that feed a final Softmax layer.
    fuses_softmax: ClassVar[bool] = False

    def value_and_grad(self, output: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """Summed loss and d(loss)/d(output), output of shape ``(n, k)``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MSE(Loss):
    """``0.5 * sum_k (output_k - onehot_k)^2`` per row, the classic cost."""

    name = "mse"

    def value_and_grad(self, output, labels):
        diff = output - one_hot(labels, output.shape[1], output.dtype)
        return 0.5 * float(np.sum(diff * diff)), diff


class CrossEntropy(Loss):
    """Cross-entropy ``-log p_label`` of softmax probabilities."""

    name = "cross-entropy"
    fuses_softmax = True

    def value_and_grad(self, output, labels):
        # Floor for log(p) and 1/p: a probability that underflowed to (or is exactly) zero gives
        # a large, finite loss and gradient instead of inf. The floor is the dtype's smallest
        # normal number (float32: 1.2e-38); a float64 constant like 1e-300 would round to 0 in
        # a float32 array.
        eps = np.finfo(output.dtype).tiny
        n = output.shape[0]
        p = output[np.arange(n), labels]
        loss = -float(np.sum(np.log(np.maximum(p, eps))))
        grad = np.zeros_like(output)
        grad[np.arange(n), labels] = -1.0 / np.maximum(p, eps)
        return loss, grad

    def from_logits(self, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Summed loss, softmax probabilities and d(loss)/d(logits) = ``p - onehot``.

        Works on log-softmax, so the loss stays finite however confident the
        network is.
        """
        n = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        with np.errstate(under="ignore"):  # exp of very negative logits is 0: the correct limit
            log_norm = np.log(np.sum(np.exp(shifted), axis=1))
            probs = np.exp(shifted - log_norm[:, None])
        loss = float(np.sum(log_norm - shifted[np.arange(n), labels]))
        return loss, probs, probs - one_hot(labels, logits.shape[1], logits.dtype)


LOSSES: dict[str, type[Loss]] = {"mse": MSE, "cross-entropy": CrossEntropy}
