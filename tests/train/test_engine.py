"""The training engine against independent references: the one-cycle schedule against torch's
OneCycleLR, reference-classifier training against a plain SGD loop with torch's scheduler (bit for bit),
and checkpoints that read back what was saved and refuse anything else."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tnncompress.data import ClassificationData, TensorImageDataset, augment_batch
from tnncompress.errors import CheckpointError
from tnncompress.train import Context, Schedule, TrainConfig, read_checkpoint, save_checkpoint, train_classifier
from tnncompress.train.hooks import observe_checkpoints


@pytest.mark.parametrize(("lr", "steps", "pct"), [(0.1, 40, 0.15), (0.05, 101, 0.3), (1.0, 7, 0.5)])
def test_onecycle_is_torchs_one_cycle_lr_and_momentum(lr, steps, pct):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=pct)
    schedule = Schedule(lr, "onecycle", pct_start=pct, momentum=(0.85, 0.95))
    for step in range(steps):
        group = optimizer.param_groups[0]
        assert schedule.lr_at(step, steps) == group["lr"]  # the same floats, not just close
        assert schedule.momentum_at(step, steps) == group["momentum"]
        optimizer.step()
        scheduler.step()


def test_the_other_schedules_leave_momentum_alone_and_refuse_unknown_kinds():
    assert Schedule(0.1, "cosine").momentum_at(3, 10) is None
    assert Schedule(0.1, "cosine").lr_at(5, 10) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="onecycle"):
        Schedule(0.1, "linear")


def _tiny_split(n: int = 80) -> ClassificationData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 3, (n,), generator=g)
    return ClassificationData(TensorImageDataset(images, labels, 0.5, 0.25), 3, (1, 8, 8), "tiny")


def _tiny_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(256, 3))


def _reference_training(model: nn.Module, data: ClassificationData, c: TrainConfig) -> list[float]:
    """The loop reference classifiers were trained with before the engine: SGD, torch's OneCycleLR."""
    torch.manual_seed(c.seed)
    g = torch.Generator().manual_seed(c.seed)
    ds, steps_per_epoch = data.dataset, -(-len(data) // c.batch_size)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": c.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=c.lr, momentum=c.momentum,
                                nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=c.lr, pct_start=0.15,
                                                   total_steps=c.epochs * steps_per_epoch)
    losses = []
    for _ in range(c.epochs):
        model.train()
        order = torch.randperm(len(ds), generator=g)
        total, seen = 0.0, 0
        for i in range(steps_per_epoch):
            idx = order[i * c.batch_size:(i + 1) * c.batch_size]
            x = ds.normalise(augment_batch(ds.images[idx], c.crop_padding, c.flip, g))
            loss = F.cross_entropy(model(x), ds.labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
        losses.append(total / seen)
    return losses


def test_classifier_training_is_the_plain_sgd_loop_bit_for_bit():
    config = TrainConfig(epochs=3, batch_size=32, lr=0.1, channels_last=False, seed=4)
    data = _tiny_split()
    engine, plain = _tiny_model(), _tiny_model()
    result = train_classifier(engine, data, None, config, log=lambda m: None)
    losses = _reference_training(plain, data, config)
    assert [h["train_loss"] for h in result["history"]] == losses
    for (name, a), b in zip(engine.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_checkpoint_reads_back_what_was_saved_and_nothing_else(tmp_path):
    path = tmp_path / "state.pt"
    seen = []
    with observe_checkpoints(seen.append):
        written = save_checkpoint(path, {"version": 3, "weights": torch.arange(4.0)}, Context())
    assert seen == [written] and "plans" in written
    saved = read_checkpoint(path, "cpu", "test", 3, "weights")
    assert torch.equal(saved["weights"], torch.arange(4.0))
    with pytest.raises(CheckpointError, match="not a tnncompress test checkpoint"):
        read_checkpoint(path, "cpu", "test", 4, "weights")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable test checkpoint"):
        read_checkpoint(path, "cpu", "test", 3, "weights")
    save_checkpoint(None, {"version": 3}, Context())  # in memory only: nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
