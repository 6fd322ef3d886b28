"""The calibration stage: a pool of training images and what data-aware steps measure on it (layer
moments, batch-norm statistics, the activations Seq-KD trains units on)."""

from .bn import recalibrate_bn
from .cache import ActivationCache, CacheReport, cache_bytes, parse_memory
from .config import CalibrateConfig
from .moments import LayerMoments, collect_moments, patches
from .pool import CalibrationPool, calibration_pool, held_out

__all__ = ["ActivationCache", "CacheReport", "CalibrateConfig", "CalibrationPool", "LayerMoments", "cache_bytes",
           "calibration_pool", "collect_moments", "held_out", "parse_memory", "patches", "recalibrate_bn"]
