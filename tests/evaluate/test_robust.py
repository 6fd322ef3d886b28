"""Accuracy under Gaussian noise and FGSM, against a per-sample reference written with plain autograd."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tnncompress.data import load_data
from tnncompress.evaluate import evaluate
from tnncompress.evaluate.robust import pixel_scale, robust_accuracy
from tnncompress.io import load_model


@pytest.fixture(scope="module")
def data():
    return load_data("fashion-mnist", "test", input_size=(1, 28, 28))


@pytest.fixture(scope="module")
def trained():
    """The bundled small CNN teacher (trained: an untrained model is at chance under any attack)."""
    path = Path(__file__).resolve().parents[2] / "tnncompress/models/checkpoints/small_cnn_fashion_mnist.safetensors"
    return load_model(path).model.eval()


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()


def test_zero_strength_is_the_clean_accuracy(small_model, data):
    clean = evaluate(small_model, data, limit=300).top1
    for attack in ("noise", "fgsm"):
        r = robust_accuracy(small_model, data, attack, 0.0, limit=300)
        assert r.top1 == clean and r.samples == 300 and r.units == "pixel"


def test_fgsm_matches_a_per_sample_reference(data):
    model = _linear()
    mean, std = pixel_scale(data)
    eps, n = 0.05, 64
    correct = 0
    for i in range(n):
        x, y = data.dataset[i]
        x = x[None].clone().requires_grad_(True)
        loss = F.cross_entropy(model(x), torch.tensor([int(y)]))
        (g,) = torch.autograd.grad(loss, x)
        pixels = (x.detach() * std + mean + eps * g.sign()).clamp(0, 1)  # the attack in pixel space
        correct += int(model((pixels - mean) / std).argmax(1).item() == int(y))
    r = robust_accuracy(model, data, "fgsm", eps, batch_size=16, limit=n)
    assert r.top1 == correct / n


def test_fgsm_hurts_more_than_noise_of_the_same_size_and_both_repeat(trained, data):
    clean = evaluate(trained, data, limit=500).top1
    noise = robust_accuracy(trained, data, "noise", 0.1, limit=500, seed=3)
    fgsm = robust_accuracy(trained, data, "fgsm", 0.1, limit=500)
    assert clean > 0.8 and fgsm.top1 < noise.top1 - 0.1 and noise.top1 <= clean + 0.02
    assert robust_accuracy(trained, data, "noise", 0.1, limit=500, seed=3).top1 == noise.top1


def test_perturbed_images_stay_valid_pixels(data):
    seen = []
    model = _linear()
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    robust_accuracy(model, data, "noise", 5.0, limit=32)
    mean, std = pixel_scale(data)
    pixels = seen[-1] * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5 and pixels.std() > 0.3
