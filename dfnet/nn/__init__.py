"""Pure-numpy neural network core; knows nothing of Spark."""

from .conv import Conv2D, Flatten, MaxPool2D, col2im, image_patches, patches_of_image
from .layers import ACTIVATIONS, INITIALIZERS, Dense, Layer, ReLU, Sigmoid, Softmax, Tanh
from .losses import LOSSES, MSE, CrossEntropy, Loss
from .network import LAYERS, LossAndGrad, Sequential, build_cnn, build_mlp, layer_from_config

__all__ = ["ACTIVATIONS", "INITIALIZERS", "LAYERS", "LOSSES", "Dense", "Layer", "ReLU", "Sigmoid", "Softmax", "Tanh",
           "Conv2D", "MaxPool2D", "Flatten", "image_patches", "patches_of_image", "col2im",
           "MSE", "CrossEntropy", "Loss", "LossAndGrad", "Sequential", "build_mlp", "build_cnn", "layer_from_config"]
