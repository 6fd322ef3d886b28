"""From a posterior to the QNN that is exported: the categoricals' temperature annealed during learning
(so the bound is fitted to the network the MAP exports), and the batch norms of every concrete QNN
re-estimated on calibration images."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tnncompress.bayes import BqnConfig, learn_posterior
from tnncompress.bayes.export import apply_map
from tnncompress.bayes.network import BayesianQuantizedNetwork
from tnncompress.bayes.posterior import QuantizedPosterior
from tnncompress.calibrate import CalibrationPool
from tnncompress.data import ClassificationData, TensorImageDataset
from tnncompress.distill import Context

from .test_network import _tiny


def test_sharpness_is_a_temperature_of_the_categoricals_that_leaves_the_map_codes():
    torch.manual_seed(0)
    post = QuantizedPosterior.from_weight(torch.randn(4, 5, dtype=torch.float64), bits=2)
    codes = post.codes().clone()
    with torch.no_grad():
        post.sharpness.fill_(3.0)
    logits = post.logits.detach()
    reference = torch.exp(3 * logits) / torch.exp(3 * logits).sum(-1, keepdim=True)
    torch.testing.assert_close(post.probs().detach(), reference, rtol=1e-12, atol=0)
    assert torch.equal(post.codes(), codes)
    entropy = -(reference * reference.log()).sum()
    torch.testing.assert_close(post.kl_uniform().detach(), 20 * math.log(4) - entropy, rtol=1e-12, atol=1e-12)
    assert "sharpness" not in post.state_dict()  # set from the step: a resumed run recomputes it


def _train_split(n: int = 32) -> ClassificationData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 2, 6, 6), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    return ClassificationData(TensorImageDataset(images, labels, 0.5, 0.25), 3, (2, 6, 6), "random")


@pytest.mark.parametrize("sharpen", [1.0, 1e4])
def test_annealing_is_geometric_and_ends_at_the_map_network(monkeypatch, sharpen):
    bqn = BayesianQuantizedNetwork(_tiny(torch.float32), bits=2, dense=True)
    seen, analytic = [], bqn.analytic

    def recording(x):
        seen.append(float(next(iter(bqn.posteriors.values())).sharpness))
        return analytic(x)

    monkeypatch.setattr(bqn, "analytic", recording)
    steps = 4
    config = BqnConfig(bits=2, steps=steps, batch_size=8, lr=1e-3, sharpen=sharpen)
    learn_posterior(bqn, None, _train_split(), config, Context(seed=0))
    assert seen == pytest.approx([sharpen ** (t / steps) for t in range(steps)], rel=1e-6)
    assert all(float(p.sharpness) == pytest.approx(sharpen) for p in bqn.posteriors.values())
    x = torch.randn(4, 2, 6, 6)
    with torch.no_grad():
        moments = analytic(x)
        map_logits = bqn.qnn(bqn.weights("map"))(x)
    if sharpen > 1:  # concentrated: the analytic network is the MAP network
        torch.testing.assert_close(moments.mean / bqn.temperature, map_logits, rtol=1e-4, atol=1e-4)
        assert float(moments.var.max()) < 1e-6
    else:
        assert float(moments.var.min()) > 1e-6


def test_a_concrete_qnn_has_its_norms_statistics_from_the_pool_and_the_export_is_that_qnn():
    bqn = BayesianQuantizedNetwork(_tiny(torch.float32), bits=2, dense=True)
    images = torch.randn(40, 2, 6, 6)
    pool = CalibrationPool(images, torch.zeros(40, dtype=torch.long), "random")
    before = bqn.student.bn.running_mean.clone(), bqn.student.bn.running_var.clone()
    weights = bqn.weights("map")
    qnn = bqn.qnn(weights, pool)
    # the reference: the quantised first convolution applied to the pool, its exact per-channel moments
    z = F.conv2d(images.double(), weights["conv.weight"].double(), padding=1)
    torch.testing.assert_close(qnn.model.bn.running_mean.double(), z.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(qnn.model.bn.running_var.double(), z.var((0, 2, 3), unbiased=False), rtol=1e-5,
                               atol=1e-6)
    assert torch.equal(bqn.student.bn.running_mean, before[0]) and torch.equal(bqn.student.bn.running_var, before[1])
    # without a pool the float student's statistics stay
    assert torch.equal(bqn.qnn(weights).model.bn.running_var, before[1])
    # the export writes that same QNN into the student
    x = torch.randn(3, 2, 6, 6)
    with torch.no_grad():
        expected = qnn(x)
        apply_map(bqn, pool)
        torch.testing.assert_close(bqn.student(x) / bqn.temperature, expected, rtol=0, atol=0)


def test_the_temperature_folds_into_the_last_layer_whether_it_is_quantised_or_not():
    from tnncompress.bayes.export import fold_temperature

    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    for dense in (False, True):  # the last linear layer float, then quantised (its scale absorbs it)
        bqn = BayesianQuantizedNetwork(_tiny(), bits=2, dense=dense)
        assert ("fc.weight" in bqn.names) == dense
        with torch.no_grad():
            bqn.log_temperature.fill_(math.log(1.7))
            analytic, map_logits = bqn.analytic(x), bqn.qnn(bqn.weights("map"))(x)
            codes = {n: bqn.posterior(n).codes() for n in bqn.names}
            assert fold_temperature(bqn) == "fc"
            assert float(bqn.temperature) == 1.0
            folded = bqn.analytic(x)
            torch.testing.assert_close(folded.mean, analytic.mean / 1.7, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(folded.var, analytic.var / 1.7 ** 2, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(bqn.qnn(bqn.weights("map"))(x), map_logits, rtol=1e-12, atol=1e-12)
            assert all(torch.equal(bqn.posterior(n).codes(), c) for n, c in codes.items())
