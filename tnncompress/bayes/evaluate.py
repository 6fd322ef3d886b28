"""The three evaluations of a BQN (dissertation 5.4.1) on a test split: top-1, NLL and ECE each.

- analytic: the logits' moments propagated; probabilities softmax(mu / s); the NLL reported is the
  bound of Theorem 5.2, an upper bound on the expected NLL only where the propagated moments are exact
  (`BayesianQuantizedNetwork.moments_exact`), an approximation of it elsewhere;
- mc: S QNNs sampled from the posterior (one draw per weight, shared by the whole test set), their
  softmax probabilities averaged; and the expected NLL itself, E_w[NLL(w)], the mean of the S QNNs'
  NLLs with its standard error, which the analytic NLL is a bound on or an approximation of;
- map: the most likely level of every weight, the deterministic QNN that is exported.

With a calibration pool, every concrete QNN (each sample, the MAP) gets its batch-norm statistics
re-estimated on it first, as the exported MAP QNN does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
    expected_nll: float  # E_w[NLL(w)] by Monte Carlo: the mean over the S QNNs of each one's test NLL
    expected_nll_se: float  # its standard error (over the S draws; 0 for S = 1)
    analytic_inexact: str | None  # why the analytic NLL is not a bound (None: it is one)


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
    draw_nll = torch.zeros(samples, dtype=torch.float64)  # each sampled QNN's summed NLL
    total = len(data) if limit is None else min(limit, len(data))
    with progress_bar("evaluating the BQN (analytic, MC, MAP)", total=total) as advance:
        for images, labels in iterate_batches(data, batch_size, limit=limit):
            x, y = images.to(device), labels.to(device)
            moments = bqn.analytic(x)
            analytic.update(moments.mean / bqn.temperature, y)
            bound_sum += float(nll_bound(moments, y, bqn.temperature).sum())
            logits = torch.stack([qnn(x) for qnn in draws])
            draw_nll += torch.stack([F.cross_entropy(z, y, reduction="sum") for z in logits]).double().cpu()
            probs = logits.softmax(2).mean(0)
            mc.update(probs.clamp_min(1e-12).log(), y)
            map_.update(fixed(x), y)
            advance(labels.shape[0])
    result = analytic.result(synthetic=data.synthetic)
    result.nll = bound_sum / max(analytic.count, 1)
    per_draw = draw_nll / max(analytic.count, 1)
    se = float(per_draw.std() / math.sqrt(samples)) if samples > 1 else 0.0
    return BqnMetrics(result, mc.result(synthetic=data.synthetic), map_.result(synthetic=data.synthetic), samples,
                      float(per_draw.mean()), se, bqn.moments_exact())
