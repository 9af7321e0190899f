"""A controllable frozen backbone: every user's content vector p_u^(c) is e_1, so a projection
row W[0] alone decides how content moves scores."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbole_invrl.invariance import FrozenBackbone, TrainingInteractions
from recbole_invrl.model.general_recommender import UltraGCNMM


@pytest.fixture
def frozen_factory(build, atomic_dataset, tmp_path):
    def make(features: np.ndarray, train_pairs, n_users: int, **config):
        valid = [(u, 1) for u in range(1, n_users + 1)]
        test = [(u, 2) for u in range(1, n_users + 1)]
        train_pairs = [(u, i) for u, i in train_pairs if i not in (1, 2)]
        atomic_dataset(tmp_path, "planted", train_pairs, valid, test, dense={"v_feat": features})
        settings = dict(embedding_size=2, content_size=2, neg_num=4, gamma_i=0.0,
                        id_reg_weight=0.0, proj_reg_weight=0.0, train_batch_size=64)
        settings.update(config)
        cfg, data, train, *_ = build("UltraGCNMM", "planted", **settings)
        model = UltraGCNMM(cfg, train._dataset)
        with torch.no_grad():
            model.user_embedding.weight.zero_()
            model.user_embedding.weight[:, 2] = 1.0  # p^(c) = e_1, p^(t) = 0
            model.projection.weight.zero_()
        frozen = FrozenBackbone(model)
        interactions = TrainingInteractions.from_dataset(train._dataset, torch.device("cpu"))
        return frozen, interactions, data

    return make


@pytest.fixture(scope="session")
def pretrained_bed(tmp_path_factory):
    """The Tiktok-preset test bed at 0.5% scale with an UltraGCN-MM pretrained on it (plain
    Adam steps, no RecBole trainer): (frozen backbone, training interactions, planted envs).

    The training is short: longer, its id embeddings fit every training interaction, and
    its score stops telling the planted environments apart (ROC-AUC 0.91 after 5 epochs,
    0.63 after 30 here); InvRL's stage 0 keeps the epoch that validates best."""
    from recbole.utils import init_seed

    from recbole_invrl.config import Config
    from recbole_invrl.data import create_dataset, data_preparation
    from recbole_invrl.data.synthetic import generate

    root = tmp_path_factory.mktemp("bed")
    folder = generate("tiktok", 0.005, root, layout="atomic", seed=0, name="bed")
    config = Config("UltraGCNMM", "bed", config_dict={"data_path": str(root), "use_gpu": False, "neg_num": 20,
                                                      "state": "WARNING", "show_progress": False})
    init_seed(0, True)
    train, _, _ = data_preparation(config, create_dataset(config))
    model = UltraGCNMM(config, train._dataset)
    interactions = TrainingInteractions.from_dataset(train._dataset, torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    for _ in range(5):
        for index in torch.randperm(len(interactions)).split(256):
            optimizer.zero_grad()
            model.loss(interactions.users[index], interactions.items[index],
                       model.sample_negatives(interactions.users[index])).backward()
            optimizer.step()
    planted = np.load(folder / "train_env.npy")
    assert len(planted) == len(interactions)
    return FrozenBackbone(model), interactions, planted


def _eq10_reference(U, T, W, content, mu, users, items, row_envs, envs, id_dims):
    """(risk, penalty) of eq. 10 written out from the raw tables, with no helper of the code
    under test: per environment UltraGCN's loss by hand (gamma_C = 0: softplus(-s_pos) + mean
    softplus(s_neg), summed over rows), g_e = dL^e / dW by autograd, the risk the mean over
    ``envs`` and the penalty sum((sum_e (g_e - mean g)^2 * m)^2)."""
    risks, grads = [], []
    for e in envs:
        u, it = users[row_envs == e], items[row_envs == e]
        s = (U[u, :id_dims].unsqueeze(1) * T[it]).sum(-1) + torch.einsum(
            "bc,cd,bmd->bm", U[u, id_dims:], W, content[it] * mu)
        env_loss = (F.softplus(-s[:, 0]) + F.softplus(s[:, 1:]).mean(1)).sum()
        risks.append(env_loss)
        grads.append(torch.autograd.grad(env_loss, W, create_graph=True)[0])
    grads = torch.stack(grads)
    penalty = ((((grads - grads.mean(0)) ** 2).sum(0) * mu) ** 2).sum()
    return torch.stack(risks).mean(), penalty


@pytest.fixture
def eq10_reference():
    """The ``_eq10_reference`` function."""
    return _eq10_reference
