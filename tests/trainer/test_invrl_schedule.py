"""Algorithm 1's schedule: the penalty growth, the partition's early exit and the binary mask."""
import json

import numpy as np
import pytest
import torch

from recbole_invrl.quick_start import run_recbole_invrl

SCHEDULE = dict(pretrain_epochs=2, epochs=2, invrl_iterations=3, partition_epochs=1, partition_rounds=3,
                mask_epochs=1, num_envs=2, neg_num=5, train_batch_size=128, show_progress=False, stopping_step=5)


@pytest.fixture
def clusters(tmp_path, clusters_dataset):
    clusters_dataset(tmp_path, n_users=24, n_items=36, extra=np.random.default_rng(0).random((36, 3)))
    return tmp_path


def run(data_path, **overrides):
    result = run_recbole_invrl("InvRL", "clusters", config_dict={"data_path": str(data_path), **SCHEDULE, **overrides})
    return result, json.loads(open(result["record_path"]).read())


def test_alpha_and_lambda_grow_by_penalty_growth_per_iteration(clusters):
    _, record = run(clusters, alpha=0.8, mask_lambda=0.2, penalty_growth=1.5)
    assert [m["alpha"] for m in record["mask"]] == pytest.approx([0.8, 1.2, 1.8])
    assert [m["lambda"] for m in record["mask"]] == pytest.approx([0.2, 0.3, 0.45])
    # lambda x R(m) of the first epoch of each iteration is that lambda times ||m||^2 (about 0.5^2 * D at t = 1)
    first = record["mask"][0]["epochs"][0]["lambda_regulariser"]
    assert first == pytest.approx(0.2 * 0.25 * 5, rel=0.2)


@pytest.mark.parametrize("threshold, rounds", [(1.0, [1, 1, 1]), (-1.0, [3, 3, 3])])
def test_the_partition_stops_once_few_interactions_move(clusters, threshold, rounds):
    _, record = run(clusters, moved_threshold=threshold)
    per_iteration = [sum(p["iteration"] == t for p in record["partition"]) for t in (1, 2, 3)]
    assert per_iteration == rounds
    if threshold >= 0:
        assert all(p["moved_share"] <= threshold for p in record["partition"])


def test_a_binary_mask_reaches_the_final_model_thresholded(clusters):
    result, record = run(clusters, mask_type="binary", invrl_iterations=1, mask_epochs=3, mask_lr=0.2)
    learned = np.array(record["mask"][-1]["mask"])
    final = torch.load(result["saved_model_file"], weights_only=True)["state_dict"]["final.content.content_mask"].numpy()
    np.testing.assert_array_equal(final, (learned > 0.5).astype(np.float32))
    assert set(final.tolist()) <= {0.0, 1.0}
    assert ((learned > 0) & (learned < 1)).any()  # the float m, thresholded on its way to the final model
