"""The calibration stage: batch-norm recalibration against hand-computed statistics, the activation
cache in memory and on disk, and its refusal when it fits neither."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnncompress.calibrate import ActivationCache, CalibrationPool, parse_memory, recalibrate_bn
from tnncompress.errors import LimitError


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3),
                         nn.BatchNorm2d(3)).eval()


def _pool(n=40):
    g = torch.Generator().manual_seed(1)
    return CalibrationPool(torch.randn(n, 2, 6, 6, generator=g) * 3 + 1, torch.zeros(n, dtype=torch.long), "test")


def test_recalibration_equals_hand_computed_statistics_and_preserves_refitted_norms():
    net, pool = _net(), _pool()
    with torch.no_grad():  # the statistics the norms should get: of their inputs over every position
        a = net[0](pool.images)
        b = net[3](net[2](net[1](a)))
        before = net(pool.images).clone()
    keep = net[4].weight.detach().clone(), net[4].bias.detach().clone()
    names = recalibrate_bn(net, pool, batch_size=7, preserve={"4"})
    assert names == ["1", "4"]
    assert torch.allclose(net[1].running_mean, a.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(net[1].running_var, a.var((0, 2, 3), unbiased=False), rtol=1e-4)
    # norm 1's output changed (it was recalibrated), so norm 4's input and statistics changed too
    with torch.no_grad():
        b_new = net[3](net[2](net[1](a)))
    assert torch.allclose(net[4].running_mean, b_new.mean((0, 2, 3)), atol=1e-5)
    assert not torch.allclose(b_new, b)
    # ... and norm 4, preserved, computes the same function of its input as before
    s_old = keep[0] / torch.sqrt(torch.ones(3) + net[4].eps)  # fresh norms: running var 1, mean 0 before
    with torch.no_grad():
        expected = b_new * s_old[:, None, None] + keep[1][:, None, None]
        assert torch.allclose(net[4](b_new), expected, atol=1e-5)
    assert not torch.allclose(net(pool.images), before)  # the network did change, through norm 1


def test_the_cache_holds_the_same_activations_in_memory_and_on_disk(tmp_path):
    net, pool = _net(), _pool(30)
    in_memory = ActivationCache(net, pool, ["3"], ["1", "4"], memory_budget=1 << 30, batch_size=8)
    on_disk = ActivationCache(net, pool, ["3"], ["1", "4"], memory_budget=10, directory=tmp_path, batch_size=8)
    assert in_memory.report.storage == "memory" and on_disk.report.storage == "disk"
    with torch.no_grad():
        want = net[:2](pool.images)
    for key in (("3", "input"), ("1", "output"), ("4", "output")):
        assert torch.equal(in_memory[key].float(), on_disk[key].float())
    assert torch.allclose(in_memory[("1", "output")].float(), want, rtol=1e-3, atol=1e-3)  # float16 where exact enough
    assert in_memory[("1", "output")].dtype == torch.float16
    directory = on_disk.directory
    on_disk.close()
    assert not directory.exists()


def test_a_cache_that_fits_nowhere_is_refused_with_the_numbers(tmp_path, monkeypatch):
    import tnncompress.calibrate.cache as cache_module

    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _p: cache_module.shutil._ntuple_diskusage(1, 1, 100))
    with pytest.raises(LimitError, match=r"needs 0.00 GiB; RAM allows 0.00 GiB \(cache_memory\)"):
        ActivationCache(_net(), _pool(30), [], ["1"], memory_budget=10, directory=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written


def test_memory_budgets_parse():
    assert parse_memory("2G") == 2 << 30 and parse_memory("512M") == 512 << 20 and parse_memory("1000") == 1000
    assert 0 < parse_memory("25%") < parse_memory("50%")


def test_held_out_images_are_the_training_images_the_pool_does_not_hold():
    from tnncompress.calibrate import calibration_pool, held_out
    from tnncompress.data import load_data

    train = load_data("synthetic?n=300", "train", input_size=(1, 6, 6), num_classes=3)
    pool, rest = calibration_pool(train, 100, seed=4), held_out(train, 100, 150, seed=4)
    assert len(rest) == 150 and "held-out" in rest.source
    seen = {tuple(x.flatten().tolist()) for x in pool.images}
    assert not any(tuple(x.flatten().tolist()) in seen for x in rest.images)  # disjoint
    assert torch.equal(held_out(train, 100, 150, seed=4).images, rest.images)  # the same every time
    assert len(held_out(train, 250, 150, seed=4)) == 50 and len(held_out(train, 300, 10, seed=4)) == 0
