"""The three evaluations of a BQN (dissertation 5.4.1) on a test split: top-1, NLL and ECE each.

- analytic: the logits' moments propagated; probabilities softmax(mu / s); the NLL reported is the
  bound of Theorem 5.2 (an upper bound on the expected NLL, as the dissertation reports it);
- mc: S QNNs sampled from the posterior (one draw per weight, shared by the whole test set), their
  softmax probabilities averaged;
- map: the most likely level of every weight, the deterministic QNN that is exported.

With a calibration pool, every concrete QNN (each sample, the MAP) gets its batch-norm statistics
re-estimated on it first, as the exported MAP QNN does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..calibrate import CalibrationPool
from ..data import ClassificationData, iterate_batches
from ..evaluate.metrics import ClassificationMetrics, Metrics
from ..progress import progress_bar
from .network import BayesianQuantizedNetwork
from .objective import nll_bound


@dataclass
class BqnMetrics:
    analytic: Metrics
    mc: Metrics
    map: Metrics
    samples: int  # S of the Monte Carlo evaluation


@torch.no_grad()
def evaluate_bqn(bqn: BayesianQuantizedNetwork, data: ClassificationData, samples: int = 5, batch_size: int = 256,
                 limit: int | None = None, device: str = "cpu", seed: int = 0,
                 pool: CalibrationPool | None = None) -> BqnMetrics:
    bqn.to(device).eval()
    g = torch.Generator(device=device).manual_seed(seed)
    draws = [bqn.qnn(bqn.weights("sample", g), pool) for _ in range(samples)]
    fixed = bqn.qnn(bqn.weights("map"), pool)
    analytic, mc, map_ = ClassificationMetrics(), ClassificationMetrics(), ClassificationMetrics()
    bound_sum = 0.0
    total = len(data) if limit is None else min(limit, len(data))
    with progress_bar("evaluating the BQN (analytic, MC, MAP)", total=total) as advance:
        for images, labels in iterate_batches(data, batch_size, limit=limit):
            x, y = images.to(device), labels.to(device)
            moments = bqn.analytic(x)
            analytic.update(moments.mean / bqn.temperature, y)
            bound_sum += float(nll_bound(moments, y, bqn.temperature).sum())
            probs = torch.stack([qnn(x).softmax(1) for qnn in draws]).mean(0)
            mc.update(probs.clamp_min(1e-12).log(), y)
            map_.update(fixed(x), y)
            advance(labels.shape[0])
    result = analytic.result(synthetic=data.synthetic)
    result.nll = bound_sum / max(analytic.count, 1)
    return BqnMetrics(result, mc.result(synthetic=data.synthetic), map_.result(synthetic=data.synthetic), samples)
