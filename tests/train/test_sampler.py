"""BatchPlan: a deterministic order that is the same for any number of processes."""
from __future__ import annotations

import pytest

from bone.train.sampler import BatchPlan


def test_epoch_visits_each_example_once_and_is_reproducible():
    plan = BatchPlan(n=50, batch_size=4, grad_accum=3, world=1, rank=0, seed=7)
    assert plan.steps_per_epoch == 4  # 50 // 12, the incomplete last global batch is dropped
    seen = [i for s in range(plan.steps_per_epoch) for mb in plan.micro_batches(0, s) for i in mb]
    assert len(seen) == len(set(seen)) == 48
    assert plan.order(0) == BatchPlan(50, 4, 3, 1, 0, 7).order(0)
    assert plan.order(0) != plan.order(1) and sorted(plan.order(1)) == list(range(50))


@pytest.mark.parametrize("world, batch, accum", [(2, 2, 1), (2, 1, 2), (4, 1, 1)])
def test_processes_share_one_global_batch(world, batch, accum):
    single = BatchPlan(40, batch_size=4, grad_accum=1, world=1, rank=0, seed=3)
    ranks = [BatchPlan(40, batch, accum, world, r, seed=3) for r in range(world)]
    for step in range(single.steps_per_epoch):
        want = sorted(single.micro_batches(1, step)[0])
        got = sorted(i for p in ranks for mb in p.micro_batches(1, step) for i in mb)
        assert got == want


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one global batch of 8"):
        BatchPlan(5, batch_size=4, grad_accum=2, world=1, rank=0, seed=0)
