"""Pieces shared by M3 and M4: the training interactions on the device, batches that hold
one batch per environment, and the pretrained backbone seen with frozen id embeddings and
a fixed content table."""
from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn.functional as F

from recbole_invrl.invariance.backbone import InvarianceParts
from recbole_invrl.model.common import item_rows

CONTENT_TABLE_BYTES = 256 * 2**20  # FrozenBackbone keeps a content table up to this size


@dataclass
class TrainingInteractions:
    """All training (user, item) pairs as device tensors."""

    users: torch.Tensor
    items: torch.Tensor

    @classmethod
    def from_dataset(cls, dataset, device: torch.device) -> "TrainingInteractions":
        feat = dataset.inter_feat
        return cls(feat[dataset.uid_field].to(device), feat[dataset.iid_field].to(device))

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class EnvironmentBatch:
    """One step's rows: ``index`` into the training interactions, and ``slot`` = e * B + j,
    the row's place in a padded (E, B) grid (environment e, position j in e's batch).
    ``active`` (E,) is 1.0 for the environments with rows in the step; ``active_envs`` is
    the same on the host."""

    index: torch.Tensor
    slot: torch.Tensor
    active: torch.Tensor
    active_envs: list[bool]
    batch_size: int

    @property
    def num_envs(self) -> int:
        return len(self.active_envs)

    @property
    def envs(self) -> torch.Tensor:
        return torch.div(self.slot, self.batch_size, rounding_mode="floor")

    def padded(self, rows: torch.Tensor) -> torch.Tensor:
        """(n, k) values of the batch's rows -> (E, B, k), zeros where an environment's
        batch has fewer than B rows."""
        grid = rows.new_zeros(self.num_envs * self.batch_size, *rows.shape[1:])
        return grid.index_copy(0, self.slot, rows).view(self.num_envs, self.batch_size, *rows.shape[1:])

    def unpadded(self, grid: torch.Tensor) -> torch.Tensor:
        """(E, B, k) -> the (n, k) values of the batch's rows."""
        return grid.reshape(self.num_envs * self.batch_size, *grid.shape[2:])[self.slot]


def environment_batches(envs: torch.Tensor, num_envs: int, batch_size: int, cycle: bool) -> list[EnvironmentBatch]:
    """One epoch of steps, each holding a batch of up to ``batch_size`` rows from every
    environment, as the authors' release draws them (one generator per environment).

    ``cycle`` False (environment models, M3): every environment's rows once, in batches of
    B; an environment whose rows have run out sits out the remaining steps, so each
    environment model trains as if alone on its interactions.
    ``cycle`` True (mask learning, M4): every non-empty environment gives a batch at every
    step, and the epoch lasts until the largest has been seen once; the smaller ones start
    over (with the same order) each time their rows run out, as in the release's mask loop.

    Rows are shuffled with the global torch RNG; the whole epoch is laid out at once, with
    two host transfers (the largest environment, the step layout), so no step waits for
    the device."""
    device = envs.device
    counts = torch.bincount(envs, minlength=num_envs)
    shuffled = torch.randperm(len(envs), device=device)
    order = shuffled[torch.argsort(envs[shuffled], stable=True)]  # grouped by environment
    offsets = counts.cumsum(0) - counts
    steps = -(-int(counts.max()) // batch_size)
    step = torch.arange(steps, device=device).view(-1, 1, 1)
    position = torch.arange(batch_size, device=device).view(1, 1, -1)
    n_env = counts.view(1, -1, 1)
    if cycle:  # environment e's k-th batch is batch (k mod its batches per pass) of a pass
        per_pass = torch.div(counts + batch_size - 1, batch_size, rounding_mode="floor").clamp(min=1)
        step = step % per_pass.view(1, -1, 1)
    local = (step * batch_size + position).expand(steps, num_envs, batch_size)  # place in the env's rows
    valid = local < n_env
    index = order[(offsets.view(1, -1, 1) + local)[valid]]
    slot = (torch.arange(num_envs, device=device).view(1, -1, 1) * batch_size + position).expand_as(local)[valid]
    active = valid.any(2)  # (steps, E)
    layout = torch.cat([valid.sum((1, 2)).unsqueeze(1), active], dim=1).tolist()
    sizes = [row[0] for row in layout]
    return [
        EnvironmentBatch(i, s, on.float(), [bool(a) for a in row[1:]], batch_size)
        for i, s, on, row in zip(index.split(sizes), slot.split(sizes), active, layout)
    ]


class TrainedBackbone:
    """A pretrained backbone as M3 and M4 draw their training batches from it."""

    def __init__(self, backbone):
        self.model = backbone  # its interaction_losses, sample_negatives, training_items, forward

    def training_batch(self, interactions: TrainingInteractions, index: torch.Tensor):
        """(users, positives, negatives, items scored) for the interactions at ``index``."""
        users, positives = interactions.users[index], interactions.items[index]
        negatives = self.model.sample_negatives(users)
        return users, positives, negatives, self.model.training_items(positives, negatives)


class FrozenBackbone(TrainedBackbone):
    """A pretrained backbone as M3/M4 see it: its parts in the form of eq. 14 (id
    embeddings frozen, content fixed; ``recbole_invrl.invariance.backbone``) and its loss.

    ``content_rows`` gives c_i of the items asked for, without gradient, so the environment
    and mask models can gate it (1 - m, mu) and project it themselves. A (n_items, D)
    content table is built when it takes at most ``table_bytes`` (the rows are then one
    gather); above that (Kwai: 86,483 x 2,048 floats, 0.7 GB) rows are computed on demand
    from the dataset's matrix, so the features are not held twice."""

    def __init__(self, backbone, table_bytes: int = CONTENT_TABLE_BYTES):
        super().__init__(backbone)
        training = backbone.training
        backbone.eval()
        with torch.no_grad():
            self.parts: InvarianceParts = backbone.invariance_parts()
            table_size = self.parts.n_items * self.parts.dim * self.parts.projection.element_size()
            self.table = self.parts.content_rows(None) if table_size <= table_bytes else None
        backbone.train(training)

    @property
    def projection(self) -> torch.Tensor:
        """The pretrained W (C, D)."""
        return self.parts.projection

    def content_rows(self, items: torch.Tensor | None) -> torch.Tensor:
        """Unmasked c_i of ``items`` (any shape) -> (*shape, D), a fresh tensor; ``items``
        None: every item (the content table itself where there is one: read it only)."""
        if self.table is not None:
            return self.table if items is None else self.table[items]
        return self.parts.content_rows(items)

    def content_table(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, index): ``rows[index]`` is c_i of ``items`` (any shape); the rows are
        the batch's items, each once (``item_rows``)."""
        rows, index = item_rows(items, self.parts.n_items)
        return self.content_rows(rows), index

    def user_parts(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the id part of the user vector, p_u^(c)) of eq. 14."""
        return self.parts.user_ids[users], self.parts.user_content[users]

    def id_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """s_id(u, i) for items (B, M)."""
        return torch.linalg.vecdot(F.embedding(items, self.parts.item_ids), self.parts.user_ids[users].unsqueeze(1))

    @torch.no_grad()
    def scores(self, interactions: TrainingInteractions, chunk: int = 16384) -> torch.Tensor:
        """Gamma(u, i, c_i) of the pretrained backbone for every training interaction (eq. 14)."""
        return torch.cat([
            self.model.forward(users, items)
            for users, items in zip(interactions.users.split(chunk), interactions.items.split(chunk))
        ])
