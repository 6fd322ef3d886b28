"""Classification metrics accumulated over batches: top-1, top-5, NLL and expected calibration error.

ECE uses 15 equal-width confidence bins (Guo et al. 2017): sum over bins of |accuracy - confidence|
weighted by the fraction of samples in the bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Metrics:
    samples: int
    top1: float
    top5: float
    nll: float  # mean negative log-likelihood (nats)
    ece: float  # expected calibration error, 15 equal-width bins
    synthetic: bool = False  # on random data: not accuracies


class ClassificationMetrics:
    def __init__(self, num_bins: int = 15):
        self.num_bins = num_bins
        self.count = 0
        self.top1 = 0
        self.top5 = 0
        self.nll = 0.0
        self.bin_count = torch.zeros(num_bins, dtype=torch.float64)
        self.bin_correct = torch.zeros(num_bins, dtype=torch.float64)
        self.bin_confidence = torch.zeros(num_bins, dtype=torch.float64)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.detach().double().cpu()
        labels = labels.detach().cpu()
        log_probs = F.log_softmax(logits, dim=1)
        self.nll += float(F.nll_loss(log_probs, labels, reduction="sum"))
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        hits = topk == labels[:, None]
        self.top1 += int(hits[:, 0].sum())
        self.top5 += int(hits.any(dim=1).sum())
        confidence, predicted = log_probs.exp().max(dim=1)
        correct = (predicted == labels).double()
        bins = (confidence * self.num_bins).long().clamp_(max=self.num_bins - 1)
        self.bin_count += torch.bincount(bins, minlength=self.num_bins).double()
        self.bin_correct += torch.bincount(bins, weights=correct, minlength=self.num_bins)
        self.bin_confidence += torch.bincount(bins, weights=confidence, minlength=self.num_bins)
        self.count += labels.shape[0]

    def ece(self) -> float:
        if self.count == 0:
            return float("nan")
        gap = (self.bin_correct - self.bin_confidence).abs()
        return float(gap.sum() / self.count)

    def result(self, synthetic: bool = False) -> Metrics:
        n = max(self.count, 1)
        return Metrics(self.count, self.top1 / n, self.top5 / n, self.nll / n, self.ece(), synthetic)
