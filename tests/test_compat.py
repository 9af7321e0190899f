import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_invrl.compat import atomic_torch_save, load_checkpoint, with_compat_mixins
from recbole_invrl.model.general_recommender import UltraGCNMM
from recbole_invrl.utils import get_trainer


@pytest.fixture
def trained(build, atomic_dataset, clustered, tmp_path):
    train_pairs, valid_pairs, test_pairs, item_cluster = clustered(n_users=20, n_items=30)
    atomic_dataset(tmp_path, "clusters", train_pairs, valid_pairs, test_pairs,
                   dense={"v_feat": np.eye(2)[item_cluster]})
    config, _, train, valid, test = build("UltraGCNMM", "clusters", epochs=3, neg_num=5,
                                          train_batch_size=64)
    model = UltraGCNMM(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train, valid, saved=True)
    return config, train, test, trainer


def test_best_checkpoint_reloads_weights_only_with_identical_scores(trained):
    config, train, test, trainer = trained
    checkpoint = torch.load(trainer.saved_model_file, weights_only=True)  # must not raise
    assert checkpoint["config"]["model"] == "UltraGCNMM"

    fresh = UltraGCNMM(config, train._dataset)
    fresh.load_state_dict(load_checkpoint(trainer.saved_model_file)["state_dict"])
    trainer.model.load_state_dict(checkpoint["state_dict"])
    users = Interaction({"user_id": torch.arange(1, 21)})
    fresh.eval(), trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.full_sort_predict(users),
                                   trainer.model.full_sort_predict(users), rtol=0, atol=0)


def test_evaluate_loads_the_best_model_weights_only(trained, monkeypatch):
    _, _, test, trainer = trained
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    result = trainer.evaluate(test, load_best_model=True)
    assert calls == [True]
    assert set(result) >= {"ndcg@10", "recall@10", "precision@10"}


class Payload:
    """Any non-weights object: unpickling it would mean importing and calling arbitrary code."""


def test_a_pickled_object_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"config": Payload()}, path)
    with pytest.raises(RuntimeError, match="weights_only=True"):
        load_checkpoint(path)


def test_interrupted_save_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"x": 1}, str(tmp_path / "ckpt.pth"))
    assert list(tmp_path.iterdir()) == []


def test_recbole_trainers_get_safe_checkpoints():
    from recbole.model.general_recommender import LightGCN
    from recbole.trainer import Trainer

    trainer_class = get_trainer(LightGCN.type, "LightGCN")
    assert issubclass(trainer_class, Trainer)
    assert trainer_class._save_checkpoint is not Trainer._save_checkpoint
    assert with_compat_mixins(trainer_class) is trainer_class


def test_runs_started_in_the_same_second_get_their_own_checkpoint(trained):
    config, train, _, trainer = trained
    other = type(trainer)(config, UltraGCNMM(config, train._dataset))
    again = type(trainer)(config, UltraGCNMM(config, train._dataset))
    assert len({trainer.saved_model_file, other.saved_model_file, again.saved_model_file}) == 3
