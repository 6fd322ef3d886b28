"""Bayesian quantized networks (dissertation chapter 5): a categorical posterior over quantised weights,
learned without sampling, evaluated three ways, exported as its MAP QNN."""

from .config import BqnConfig
from .evaluate import BqnMetrics, evaluate_bqn
from .network import BayesianQuantizedNetwork, quantizable
from .posterior import QuantizedPosterior, levels
from .propagate import Gauss, Propagator
from .train import learn_posterior

__all__ = ["BayesianQuantizedNetwork", "BqnConfig", "BqnMetrics", "Gauss", "Propagator", "QuantizedPosterior",
           "evaluate_bqn", "learn_posterior", "levels", "quantizable"]
