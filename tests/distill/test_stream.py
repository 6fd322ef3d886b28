"""Training batches are functions of (seed, phase, step): shards of two processes make up the batch of
one, with the same crops, and a restarted stream draws the same batches."""

import torch

from tnncompress.distill import Context
from tnncompress.train.stream import BatchStream


def test_two_shards_make_up_the_single_process_batch(bundled_data):
    train, _ = bundled_data
    one = BatchStream(train, 10, seed=3, ctx=Context())
    ranks = [BatchStream(train, 10, seed=3, ctx=Context(rank=r, world=2)) for r in (0, 1)]
    for phase, step in ((0, 0), (2, 5), (1, 2000)):  # 2000: a later epoch, another permutation
        x, y = one.batch(phase, step)
        parts = [s.batch(phase, step) for s in ranks]
        assert [p[0].shape[0] for p in parts] == [5, 5]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)


def test_batches_depend_only_on_seed_phase_and_step(bundled_data):
    train, _ = bundled_data
    a, b = BatchStream(train, 16, seed=0, ctx=Context()), BatchStream(train, 16, seed=0, ctx=Context())
    for step in range(3):
        a.batch(0, step)
    assert torch.equal(a.batch(0, 3)[0], b.batch(0, 3)[0])  # b never drew steps 0-2
    assert not torch.equal(a.batch(0, 4)[0], a.batch(1, 4)[0])  # each phase has its own order
    epoch = a.steps_per_epoch
    seen = torch.cat([a.indices(0, s) for s in range(epoch)])
    assert torch.equal(seen.sort().values, torch.arange(len(train)))  # an epoch visits every sample once
    plain = BatchStream(train, 16, seed=0, ctx=Context(), augment=False)
    x, _ = plain.batch(0, 0)
    ds = train.dataset
    assert torch.equal(x, ds.normalise(ds.images[plain.indices(0, 0)]))
