"""What the calibration stage is told: the pool of training images every data-aware step learns from."""

from ..options import Section, option


class CalibrateConfig(Section, name="calibrate", title="Calibration"):
    samples: int = option(2048, "Training images in the calibration pool.", flat="calib_samples", minimum=1)
    cache_memory: str = option("25%", "Memory the activation cache may hold in RAM (bytes, 2G, or % of RAM).")
    recalibrate_bn: bool = option(True, "Re-estimate batch-norm statistics of the student on the pool.")

    def validate(self) -> None:
        from .cache import parse_memory  # the cache module imports torch; the config stays light

        parse_memory(self.cache_memory)
