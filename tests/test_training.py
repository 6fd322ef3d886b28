"""Teacher training: augmentation against a brute-force crop, and a short real run that learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tnncompress.data import ClassificationData, TensorImageDataset, augment_batch, load_data
from tnncompress.models import create_model
from tnncompress.train import TrainConfig, train_classifier


def test_augment_matches_explicit_crop_and_flip():
    images = torch.randint(0, 256, (6, 2, 5, 7), dtype=torch.uint8)
    g1 = torch.Generator().manual_seed(3)
    out = augment_batch(images, padding=2, flip=True, generator=g1)
    g2 = torch.Generator().manual_seed(3)  # replay the same random draws
    dy = torch.randint(0, 5, (6,), generator=g2)
    dx = torch.randint(0, 5, (6,), generator=g2)
    flips = torch.rand(6, generator=g2) < 0.5
    padded = F.pad(images, (2, 2, 2, 2))
    for i in range(6):
        crop = padded[i, :, dy[i]:dy[i] + 5, dx[i]:dx[i] + 7]
        assert torch.equal(out[i], crop.flip(2) if flips[i] else crop)


@pytest.mark.slow
def test_short_training_learns():
    full = load_data("fashion-mnist", "train")
    ds = full.dataset
    subset = ClassificationData(TensorImageDataset(ds.images[:3000], ds.labels[:3000], ds.mean, ds.std), 10,
                                (1, 28, 28), "subset")
    test = load_data("fashion-mnist", "test")
    test.dataset = TensorImageDataset(test.dataset.images[:1000], test.dataset.labels[:1000],
                                      test.dataset.mean, test.dataset.std)
    model = create_model("small_cnn")
    result = train_classifier(model, subset, test, TrainConfig(epochs=2, batch_size=64, lr=0.05, eval_every=1),
                              log=lambda m: None)
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]
    assert result["test"]["top1"] > 0.6  # chance is 0.1
