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


class _StubBackbone:
    """A backbone of the eq. 14 form with hand-set tables (4 users, 5 items, K = 2, C = 2,
    D = 3), recording the mode it was in when its parts were taken."""

    def __init__(self, training=True):
        from recbole_invrl.invariance.backbone import InvarianceParts

        self.training = training
        self.modes = []
        self.content = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [3.0, 0.0, 1.0],
                                     [1.0, 1.0, 1.0]])
        self.parts = InvarianceParts(
            user_ids=torch.tensor([[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5], [0.0, 3.0]]),
            item_ids=torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0], [0.5, 0.5], [-1.0, 1.0]]),
            user_content=torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]),
            projection=torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]),
            content_rows=lambda items: self.content if items is None else self.content[items],
            content_reg=0.1, id_reg=0.2)

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def invariance_parts(self):
        self.modes.append(self.training)
        return self.parts

    def forward(self, users, items):
        return users.float() * 10 + items.float()

    def sample_negatives(self, users):
        return torch.stack([users + 1, users + 2], 1)

    def training_items(self, positives, negatives):
        return torch.cat([positives.unsqueeze(1), negatives], 1)


@pytest.mark.parametrize("training", [True, False])
def test_the_frozen_backbone_takes_the_parts_in_eval_mode_and_restores_the_mode(training):
    from recbole_invrl.invariance.common import FrozenBackbone

    backbone = _StubBackbone(training)
    frozen = FrozenBackbone(backbone)
    assert backbone.modes == [False] and backbone.training is training
    assert torch.equal(frozen.projection, backbone.parts.projection)


def test_the_content_table_is_kept_up_to_its_size_limit_and_rows_are_the_same_either_way():
    from recbole_invrl.invariance.common import CONTENT_TABLE_BYTES, FrozenBackbone

    assert CONTENT_TABLE_BYTES == 256 * 2**20
    size = 5 * 3 * 4  # n_items x D float32 values
    kept, on_demand = FrozenBackbone(_StubBackbone(), table_bytes=size), FrozenBackbone(_StubBackbone(), size - 1)
    assert kept.table is not None and on_demand.table is None
    assert FrozenBackbone(_StubBackbone()).table is not None
    items = torch.tensor([[3, 1], [4, 3]])
    content = _StubBackbone().content
    for frozen in (kept, on_demand):
        assert torch.equal(frozen.content_rows(items), content[items])
        assert torch.equal(frozen.content_rows(None), content)
        rows, index = frozen.content_table(items)
        assert torch.equal(rows, content[[1, 3, 4]]) and torch.equal(index, torch.tensor([[1, 0], [2, 1]]))


def test_user_parts_and_id_scores_are_read_off_the_tables_by_hand():
    from recbole_invrl.invariance.common import FrozenBackbone

    frozen = FrozenBackbone(_StubBackbone())
    ids, content = frozen.user_parts(torch.tensor([3, 1]))
    assert ids.tolist() == [[0.0, 3.0], [1.0, 2.0]] and content.tolist() == [[2.0, 1.0], [1.0, 0.0]]
    scores = frozen.id_scores(torch.tensor([1, 2]), torch.tensor([[1, 2, 4], [3, 0, 2]]))
    # user 1 = (1, 2): items (1, 1), (2, -1), (-1, 1); user 2 = (-1, 0.5): (0.5, 0.5), (0, 0), (2, -1)
    assert scores.tolist() == [[3.0, 0.0, 1.0], [-0.25, 0.0, -2.5]]


def test_scores_are_the_backbone_forward_over_chunks_and_batches_come_from_its_sampler():
    from recbole_invrl.invariance.common import FrozenBackbone, TrainingInteractions

    interactions = TrainingInteractions(torch.tensor([1, 2, 3, 1, 2]), torch.tensor([4, 3, 1, 1, 2]))
    assert len(interactions) == 5
    frozen = FrozenBackbone(_StubBackbone())
    assert frozen.scores(interactions, chunk=2).tolist() == [14.0, 23.0, 31.0, 11.0, 22.0]
    assert frozen.scores(interactions).tolist() == [14.0, 23.0, 31.0, 11.0, 22.0]
    users, positives, negatives, items = frozen.training_batch(interactions, torch.tensor([4, 0]))
    assert users.tolist() == [2, 1] and positives.tolist() == [2, 4]
    assert negatives.tolist() == [[3, 4], [2, 3]] and items.tolist() == [[2, 3, 4], [4, 2, 3]]


def test_training_interactions_come_from_the_dataset_fields():
    from recbole_invrl.invariance.common import TrainingInteractions

    class Dataset:
        uid_field, iid_field = "u", "i"
        inter_feat = {"u": torch.tensor([3, 1]), "i": torch.tensor([2, 5]), "x": torch.tensor([0, 0])}

    interactions = TrainingInteractions.from_dataset(Dataset(), torch.device("cpu"))
    assert interactions.users.tolist() == [3, 1] and interactions.items.tolist() == [2, 5]
    assert interactions.users.device.type == "cpu"


@pytest.mark.parametrize("cycle", [False, True])
def test_empty_last_environments_still_have_their_place_in_the_grid(cycle):
    envs = _envs([4, 3, 0, 0])[:7]
    steps = environment_batches(envs, 4, batch_size=2, cycle=cycle)
    assert steps[0].active_envs == [True, True, False, False] and steps[0].num_envs == 4
    assert steps[0].padded(torch.ones(len(steps[0].index), 1)).shape == (4, 2, 1)


def test_rows_come_in_the_order_of_one_shuffle_grouped_by_environment():
    """The epoch is one torch.randperm of the rows; each environment's batches take its rows
    in that order (a stable grouping), B at a time."""
    envs = _envs([9, 6])
    torch.manual_seed(4)
    steps = environment_batches(envs, 2, batch_size=4, cycle=False)
    torch.manual_seed(4)
    shuffled = torch.randperm(len(envs)).tolist()
    for e in (0, 1):
        expected = [r for r in shuffled if envs[r] == e]
        got = [r for s in steps for r in s.index.tolist() if envs[r] == e]
        assert got == expected


def test_cycling_restarts_each_environment_after_exactly_its_own_rows():
    """ceil(n_e / B) batches make a pass of environment e: with 10 rows and B = 5 every step
    holds 5 of them; with 6 rows the passes are 5, 1, 5, 1, ... and cover all 6."""
    for small, expected in ((10, [5, 5, 5, 5, 5]), (6, [5, 1, 5, 1, 5])):
        envs = _envs([23, small])
        torch.manual_seed(0)
        steps = environment_batches(envs, 2, batch_size=5, cycle=True)
        assert [int((envs[s.index] == 1).sum()) for s in steps] == expected
        first_pass = [r for s in steps[: -(-small // 5)] for r in s.index.tolist() if envs[r] == 1]
        assert sorted(first_pass) == sorted(torch.nonzero(envs == 1).squeeze(1).tolist())
