"""Pure-numpy neural network core; knows nothing of Spark."""

from .layers import ACTIVATIONS, INITIALIZERS, Dense, Layer, ReLU, Sigmoid, Softmax, Tanh
from .losses import LOSSES, MSE, CrossEntropy, Loss
from .network import LossAndGrad, Sequential, build_mlp

__all__ = ["ACTIVATIONS", "INITIALIZERS", "LOSSES", "Dense", "Layer", "ReLU", "Sigmoid", "Softmax", "Tanh",
           "MSE", "CrossEntropy", "Loss", "LossAndGrad", "Sequential", "build_mlp"]
