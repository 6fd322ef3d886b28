"""Every layer's singular values and the network's Lipschitz bounds, for a model at an input size."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UsageError
from .layers import SPECTRAL_LAYERS, LayerSpectrum, check_layer, check_memory, layer_spectrum
from .lipschitz import BoundUnavailable, NetworkBound, bn_after, bn_scale, measured_lower_bound, upper_bound


@dataclass
class ModelSpectrum:
    input_size: tuple[int, ...]
    dtype: str
    layers: list[LayerSpectrum]
    network: NetworkBound | None
    folded: dict[str, float]  # layer -> sigma_max with the batch norm after it folded in
    seconds: float

    def to_dict(self, top: int | None = None) -> dict:
        net = None
        if self.network is not None:
            net = {"upper": self.network.upper, "upper_unavailable": self.network.reason,
                   "lower": self.network.lower, "pairs": self.network.pairs}
        return {"input_size": list(self.input_size), "dtype": self.dtype, "seconds": self.seconds,
                "layers": [dict(s.to_dict(top), sigma_max_with_bn=self.folded.get(s.name)) for s in self.layers],
                "network": net}


def layer_inputs(model: nn.Module, input_size: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """The spatial size of the input each conv and linear layer sees (linear layers: 1x1)."""
    sizes: dict[str, tuple[int, int]] = {}

    def keep(name):
        def hook(_module, args) -> None:  # a pre-hook that returned a value would replace the input
            sizes.setdefault(name, (1, 1) if args[0].dim() == 2 else tuple(args[0].shape[-2:]))
        return hook

    with contextlib.ExitStack() as stack:
        for name, m in model.named_modules():
            if isinstance(m, SPECTRAL_LAYERS):
                stack.callback(m.register_forward_pre_hook(keep(name)).remove)
        try:
            with torch.no_grad():
                param = next(model.parameters())
                model(torch.zeros(1, *input_size, dtype=param.dtype, device=param.device))
        except RuntimeError as exc:
            raise UsageError(f"the model does not run at input size {','.join(map(str, input_size))}: "
                             f"{str(exc).splitlines()[0][:200]}") from None
    return sizes


def model_spectrum(model: nn.Module, input_size: tuple[int, ...], dtype=torch.float64, power_iters: int = 50,
                   network: bool = True, pairs: int = 32, seed: int = 0,
                   progress: Callable[[str], None] | None = None) -> ModelSpectrum:
    """Singular values of every conv and linear layer (in `dtype`) and, with `network`, the network's
    Lipschitz upper bound (or why there is none) and a measured lower bound. Raises ValueError (with
    the layer's name) for a layer without an exact method or an input size a stride does not divide."""
    t0 = time.perf_counter()
    model = model.eval()
    for name, m in model.named_modules():
        check_layer(name, m)
    sizes = layer_inputs(model, input_size)
    for name, m in model.named_modules():  # every layer's memory checked before the first is computed
        if isinstance(m, SPECTRAL_LAYERS) and name in sizes:
            check_memory(name, m, sizes[name], dtype)
    folds = bn_after(model) if network else {}
    layers, folded = [], {}
    for name, m in model.named_modules():
        if not isinstance(m, SPECTRAL_LAYERS) or name not in sizes:
            continue
        if progress:
            progress(name)
        layers.append(layer_spectrum(name, m, sizes[name], dtype, power_iters=power_iters, seed=seed))
        if name in folds:
            bn = model.get_submodule(folds[name])
            folded[name] = layer_spectrum(name, m, sizes[name], dtype, out_scale=bn_scale(bn),
                                          power_iters=power_iters, seed=seed).sigma_max
    bound = None
    if network:
        sigma = {s.name: folded.get(s.name, s.sigma_max) for s in layers}
        try:
            upper = upper_bound(model, sigma, input_size, folded=folds)
            bound = NetworkBound(upper)
        except BoundUnavailable as exc:
            bound = NetworkBound(None, str(exc))
        except Exception as exc:  # noqa: BLE001 - fx cannot trace every model; say so instead of failing
            bound = NetworkBound(None, f"the model cannot be traced: {str(exc).splitlines()[0][:200]}")
        bound.lower, bound.pairs = measured_lower_bound(model, input_size, pairs=pairs, seed=seed)
    return ModelSpectrum(tuple(input_size), str(dtype).removeprefix("torch."), layers, bound, folded,
                         time.perf_counter() - t0)
