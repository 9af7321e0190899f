import pytest
import torch

from recbole_invrl.invariance import environment_batches


def _envs(sizes):
    envs = torch.cat([torch.full((n,), e, dtype=torch.long) for e, n in enumerate(sizes)])
    return envs[torch.randperm(len(envs), generator=torch.Generator().manual_seed(0))]


def test_without_cycling_every_row_comes_once_in_batches_of_its_own_environment():
    envs = _envs([23, 0, 7, 12])
    torch.manual_seed(1)
    steps = environment_batches(envs, 4, batch_size=5, cycle=False)
    assert len(steps) == 5  # ceil(23 / 5): the largest environment sets the length
    seen = torch.cat([s.index for s in steps])
    assert sorted(seen.tolist()) == list(range(len(envs)))  # each row exactly once
    for step in steps:
        rows_env = envs[step.index]
        assert torch.equal(step.envs, rows_env)  # the slot names the row's own environment
        counts = torch.bincount(rows_env, minlength=4)
        assert counts.max() <= 5
        assert step.active.tolist() == [float(c > 0) for c in counts.tolist()]
        assert step.active_envs == [bool(c > 0) for c in counts.tolist()]
        assert len(set(step.slot.tolist())) == len(step.slot)  # one row per slot
    # environment 2 (7 rows) has a full batch then a partial one, then sits out
    assert [int((envs[s.index] == 2).sum()) for s in steps] == [5, 2, 0, 0, 0]


def test_cycling_gives_every_environment_a_batch_at_every_step():
    envs = _envs([23, 0, 7, 3])
    torch.manual_seed(2)
    steps = environment_batches(envs, 4, batch_size=5, cycle=True)
    assert len(steps) == 5
    counts = [torch.bincount(envs[s.index], minlength=4).tolist() for s in steps]
    # batches of B with a partial one at the end of each pass; the smaller ones start over
    assert [c[0] for c in counts] == [5, 5, 5, 5, 3]
    assert [c[2] for c in counts] == [5, 2, 5, 2, 5]
    assert [c[3] for c in counts] == [3, 3, 3, 3, 3] and all(c[1] == 0 for c in counts)
    for step in steps:
        assert len(set(step.index.tolist())) == len(step.index)  # no row twice in one step
    largest = torch.cat([s.index[envs[s.index] == 0] for s in steps])
    assert sorted(largest.tolist()) == sorted(torch.nonzero(envs == 0).squeeze(1).tolist())
    small = torch.cat([s.index[envs[s.index] == 2] for s in steps[:2]])  # one pass
    assert sorted(small.tolist()) == sorted(torch.nonzero(envs == 2).squeeze(1).tolist())


def test_padding_round_trips_the_rows():
    envs = _envs([4, 3])
    step = environment_batches(envs, 2, batch_size=4, cycle=False)[0]
    rows = torch.arange(len(step.index), dtype=torch.float).unsqueeze(1) + 1
    grid = step.padded(rows)
    assert grid.shape == (2, 4, 1)
    assert torch.equal(step.unpadded(grid), rows)
    assert grid[1, 3, 0] == 0  # environment 1 has 3 rows: its fourth slot is padding
    for row, env in zip(rows, step.envs):
        assert row in grid[env]


@pytest.mark.parametrize("cycle", [False, True])
def test_a_batch_larger_than_every_environment_is_one_step(cycle):
    envs = _envs([3, 2])
    steps = environment_batches(envs, 2, batch_size=8, cycle=cycle)
    assert len(steps) == 1 and sorted(steps[0].index.tolist()) == list(range(5))
