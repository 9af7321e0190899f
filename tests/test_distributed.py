"""Two-process training through RecBole's distributed path, on CPU with gloo."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from recbole_invrl.distributed import data_buffer_names, loss_scale
from recbole_invrl.quick_start import run, run_recbole_invrl, spawn_ranks

SHORT_INVRL = {"pretrain_epochs": 3, "invrl_iterations": 1, "num_envs": 2, "partition_epochs": 1,
               "partition_rounds": 1, "mask_epochs": 1}


@pytest.fixture
def clusters(tmp_path, clusters_dataset):
    clusters_dataset(tmp_path, n_users=40, n_items=60, per_user=14,
                     extra=np.random.default_rng(0).normal(size=(60, 3)))
    return tmp_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def settings(data_path, model: str) -> dict:
    config = {"data_path": str(data_path), "epochs": 8, "neg_num": 5, "show_progress": False,
              "state": "WARNING", "learning_rate": 0.01, "train_batch_size": 64}
    return {**config, **(SHORT_INVRL if model == "InvRL" else {})}


def rank_worker(rank: int, model: str, config: dict, queue) -> None:
    """One rank of a 2-process run; reports what every rank must agree on."""
    import recbole_invrl.quick_start as quick_start

    trainers = []
    find_trainer = quick_start.get_trainer

    def recording_get_trainer(model_type, name):
        trainer_class = find_trainer(model_type, name)

        class Recording(trainer_class):
            def __init__(self, *args):
                super().__init__(*args)
                trainers.append(self)

        return Recording

    quick_start.get_trainer = recording_get_trainer
    torch.set_num_threads(1)
    result = quick_start.run_recbole_invrl(model, "clusters", config_dict={**config, "local_rank": rank})
    trainer = trainers[0]
    state = {  # numpy: torch tensors would travel as shared memory that dies with the rank
        "params": torch.cat([p.detach().flatten() for p in trainer.model.parameters()]).numpy(),
        "mask": trainer.model.mask.numpy() if model == "InvRL" else None,
        "envs": trainer.envs.numpy() if model == "InvRL" else None,
        "checkpoint": trainer.saved_model_file,
        "device": str(trainer.device),
        "distributed": not trainer.config["single_spec"],
    }
    queue.put((rank, result, state))


def two_ranks(model: str, config: dict) -> dict[int, tuple[dict, dict]]:
    config = {**config, "nproc": 2, "world_size": 2, "ip": "localhost", "port": free_port(), "offset": 0}
    reports = spawn_ranks(rank_worker, (model, config), 2)
    return {rank: (result, state) for rank, result, state in reports}


@pytest.mark.parametrize("model", ["UltraGCNMM", "InvRL"])
def test_two_gloo_ranks_stay_in_step_and_match_one_process(clusters, model):
    config = settings(clusters, model)
    single = run_recbole_invrl(model, "clusters", config_dict=config)
    ranks = two_ranks(model, config)

    (result0, state0), (result1, state1) = ranks[0], ranks[1]
    assert state0["distributed"] and state0["device"] == "cpu"
    # DDP keeps the replicas identical; rank 0's environments and mask reached rank 1.
    assert np.array_equal(state0["params"], state1["params"])
    if model == "InvRL":
        assert np.array_equal(state0["mask"], state1["mask"])
        assert np.array_equal(state0["envs"], state1["envs"])
        assert not np.all(state0["mask"] == 0.5)  # M4 ran and moved the mask
    assert state0["checkpoint"] == state1["checkpoint"]  # one file, written by rank 0
    assert result0["test_result"] == result1["test_result"]  # metrics reduced over ranks
    # Stated tolerance: the 2-process run (other batch order and negatives) lands within
    # 0.1 NDCG@10 of the 1-process run on this data, where both are far above chance.
    assert abs(result0["test_result"]["ndcg@10"] - single["test_result"]["ndcg@10"]) <= 0.1
    # Each user has 50 unseen items, 2 of them in test: a random ranking recalls 10/50.
    assert result0["test_result"]["recall@10"] > 0.4


def test_run_returns_rank0_result_of_a_two_process_run(clusters):
    config = {**settings(clusters, "UltraGCNMM"), "epochs": 1}
    result = run("UltraGCNMM", "clusters", config_dict=config, nproc=2, port=free_port())
    assert result["model"] == "UltraGCNMM" and "ndcg@10" in result["test_result"]


def test_sum_losses_are_scaled_to_the_world_size():
    assert loss_scale({"single_spec": True, "world_size": 4}) == 1
    assert loss_scale({"single_spec": False, "world_size": 4}) == 4


def test_data_buffers_are_named_for_ddp_to_skip(build, clusters):
    from recbole_invrl.model.general_recommender import InvRL

    config, _, train, _, _ = build("InvRL", "clusters")
    names = data_buffer_names(InvRL(config, train._dataset))
    assert "backbone.content.dense_v_feat" in names and "final.neighbor_index" in names
    assert "mask" not in names  # m is state: DDP broadcasts it from rank 0
