"""Metrics against a brute-force reference written with plain Python loops."""

from __future__ import annotations

import math

import pytest
import torch

from tnncompress.data import load_data
from tnncompress.evaluate import ClassificationMetrics, evaluate


def _reference(logits: list[list[float]], labels: list[int], bins: int = 15) -> dict:
    n = len(labels)
    top1 = top5 = 0
    nll = 0.0
    bin_stats = [[0, 0.0, 0.0] for _ in range(bins)]
    for row, y in zip(logits, labels, strict=True):
        m = max(row)
        z = sum(math.exp(v - m) for v in row)
        probs = [math.exp(v - m) / z for v in row]
        nll -= math.log(probs[y])
        ranked = sorted(range(len(row)), key=lambda i: -row[i])
        top1 += ranked[0] == y
        top5 += y in ranked[:5]
        conf = max(probs)
        b = min(int(conf * bins), bins - 1)
        bin_stats[b][0] += 1
        bin_stats[b][1] += ranked[0] == y
        bin_stats[b][2] += conf
    ece = sum(abs(c - s) for _, c, s in bin_stats) / n
    return {"top1": top1 / n, "top5": top5 / n, "nll": nll / n, "ece": ece}


def test_metrics_match_brute_force():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(257, 12, generator=g) * 3
    labels = torch.randint(0, 12, (257,), generator=g)
    m = ClassificationMetrics()
    for start in range(0, 257, 50):  # accumulate over uneven batches
        m.update(logits[start:start + 50], labels[start:start + 50])
    got = m.result()
    ref = _reference(logits.double().tolist(), labels.tolist())
    assert got.samples == 257
    for key in ("top1", "top5"):
        assert getattr(got, key) == ref[key]
    assert got.nll == pytest.approx(ref["nll"], rel=1e-12)
    assert got.ece == pytest.approx(ref["ece"], rel=1e-12)


def test_perfectly_confident_and_right_is_calibrated():
    m = ClassificationMetrics()
    m.update(torch.eye(5) * 100, torch.arange(5))
    r = m.result()
    assert r.top1 == 1.0 and r.ece == pytest.approx(0.0, abs=1e-12) and r.nll < 1e-12


def test_evaluate_counts_on_real_data(small_model):
    data = load_data("fashion-mnist", "test")
    r = evaluate(small_model, data, batch_size=100, limit=300)
    assert r.samples == 300 and 0 <= r.top1 <= r.top5 <= 1 and not r.synthetic
