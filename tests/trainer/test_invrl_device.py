"""Device handling: every tensor of InvRL's stages lives on the configured device, and a
training step (backbone, environment models, mask learner) never moves data to the host.

Runs on the CPU everywhere, and also on CUDA where a GPU is present."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from recbole_invrl.invariance import FrozenBackbone, MaskLearner, TrainingInteractions
from recbole_invrl.invariance.common import environment_batches
from recbole_invrl.invariance.partition import environment_models, initial_environments
from recbole_invrl.model.common import distinct_items
from recbole_invrl.model.general_recommender import InvRL

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
HOST_TRANSFERS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@pytest.fixture
def clusters(tmp_path, clusters_dataset):
    clusters_dataset(tmp_path, n_users=16, n_items=24, extra=np.linspace(0, 1, 24),
                     words=[[i % 4 + 1, 6] for i in range(24)])
    return tmp_path


@contextmanager
def no_host_transfers(monkeypatch):
    """Any Tensor -> Python/host conversion inside the block fails the test."""
    def forbidden(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"Tensor.{name}() moved data to the host inside a training step")
        return method

    with monkeypatch.context() as patch:
        for name in HOST_TRANSFERS:
            patch.setattr(torch.Tensor, name, forbidden(name))
        yield


def tensors_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


@pytest.mark.parametrize("device", DEVICES)
def test_stages_keep_every_tensor_on_the_device_and_steps_off_the_host(build, clusters, device, monkeypatch):
    config, _, train, _, _ = build("InvRL", "clusters", use_gpu=device == "cuda", neg_num=4, num_envs=3)
    assert config["device"].type == device
    model = InvRL(config, train._dataset).to(config["device"])
    assert {t.device.type for t in tensors_of(model).values()} == {device}

    interactions = TrainingInteractions.from_dataset(train._dataset, config["device"])
    frozen = FrozenBackbone(model.backbone)
    envs = torch.randint(3, (len(interactions),), device=config["device"])
    shared = environment_models("shared", frozen, 3, model.mask, 0.1)
    fresh = environment_models("fresh", frozen, 3, model.mask, 0.1)
    learner = MaskLearner(frozen, model.mask, 3, 0.1)
    assert {t.device.type for t in (interactions.users, frozen.content_rows(interactions.items[:4]), envs)} == {device}
    modules = [shared, fresh, learner]
    assert {t.device.type for m in modules for t in tensors_of(m).values()} == {device}

    batch = environment_batches(envs, 3, 16, cycle=True)[0]  # the epoch's layout is made outside the steps
    users, positives, negatives, items = frozen.training_batch(interactions, batch.index)
    with no_host_transfers(monkeypatch):
        backbone_loss = model.backbone.loss(users, positives, negatives)
        backbone_loss.backward()
        for environments in (shared, fresh):
            environments.loss(users, positives, negatives, items, batch).backward()
            environments.drop_inactive_gradients(batch)
        learner.loss(users, positives, negatives, items, batch, 1.0, 0.1).total.backward()
        start = initial_environments("score", frozen, interactions, 3)
        assigned = [m.assign(interactions, rule, 4) for m in (shared, fresh) for rule in ("score", "likelihood")]
    assert {t.device.type for t in [start, *assigned, learner.mask.grad]} == {device}


@pytest.mark.parametrize("shape", [(7,), (3, 5)])
def test_projecting_duplicates_gives_the_numbers_of_projecting_distinct_items(shape):
    items = torch.randint(1, 6, shape)
    table = torch.randn(6, 4)
    for dedupe in (True, False):
        rows, index = distinct_items(items, 6, dedupe=dedupe)
        assert torch.equal((table[rows] * 2)[index], table[items] * 2)
    assert len(distinct_items(items, 6, dedupe=True)[0]) == len(set(items.flatten().tolist()))
    assert len(distinct_items(items, 6, dedupe=False)[0]) == items.numel()


def test_the_guard_catches_a_host_transfer(monkeypatch):
    with no_host_transfers(monkeypatch), pytest.raises(AssertionError, match="item"):
        torch.ones(2).sum().item()
