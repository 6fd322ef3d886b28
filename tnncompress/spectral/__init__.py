"""Spectral analysis of layers and networks: exact singular values of convolutions (FFT, polyphase
strides, the core of factorised layers), bounds for zero padding, and network Lipschitz bounds."""

from .clip import clip_kernel, clip_layer
from .control import SpectralControl
from .core import core_kernel, frames, has_core
from .fft import conv_sigma_max, conv_singular_values, padding_grid, transfer_matrices
from .layers import (
    SPECTRAL_LAYERS,
    LayerSpectrum,
    NoExactMethod,
    SpectralInputError,
    dense_operator,
    layer_spectrum,
    power_iteration,
)
from .model import ModelSpectrum, model_spectrum
from .orthogonal import OrthogonalConv2d

__all__ = ["SPECTRAL_LAYERS", "LayerSpectrum", "ModelSpectrum", "NoExactMethod", "OrthogonalConv2d",
           "SpectralControl", "SpectralInputError", "clip_kernel", "clip_layer", "conv_sigma_max",
           "conv_singular_values", "core_kernel", "dense_operator", "frames", "has_core", "layer_spectrum",
           "model_spectrum", "padding_grid", "power_iteration", "transfer_matrices"]
