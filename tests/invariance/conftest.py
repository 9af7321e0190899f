"""A controllable frozen backbone: every user's content vector p_u^(c) is e_1, so a projection
row W[0] alone decides how content moves scores."""
import numpy as np
import pytest
import torch

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
