import json

import numpy as np
import pytest
import torch

from recbole_invrl.invariance.truth import PlantedTruth, TruthFileError, purity

LAYOUT = [("v_feat", 4), ("t_words", 3), ("a_feat", 2)]


def _write(folder, modalities=None, envs=None):
    if modalities is not None:
        (folder / "truth.json").write_text(json.dumps({"modalities": modalities}))
    if envs is not None:
        np.save(folder / "train_env.npy", np.asarray(envs))


def test_roles_follow_the_model_layout_and_scores_match_their_definitions(tmp_path):
    _write(tmp_path, {"v_feat": {"invariant_dims": [0, 2], "spurious_dims": [1, 3]},
                      "a_feat": {"invariant_dims": [1], "spurious_dims": [0]}}, [0, 0, 1, 1, 1, 0])
    truth = PlantedTruth.load(tmp_path, LAYOUT, 6)
    assert truth.roles.tolist() == [1, 0, 1, 0, -1, -1, -1, 0, 1]
    assert truth.oracle_mask().tolist() == [1, 0, 1, 0, 1, 1, 1, 0, 1]
    mask = torch.tensor([0.9, 0.1, 0.8, 0.3, 0.5, 0.5, 0.5, 0.2, 0.4])
    scores = truth.mask_scores(mask)
    # invariant 0.9, 0.8, 0.4 against spurious 0.1, 0.3, 0.2: every pair ordered but none
    assert scores["auc"] == pytest.approx(1.0)
    assert scores["gate_ratio"] == pytest.approx((0.9 + 0.8 + 0.4) / (0.1 + 0.3 + 0.2))
    found = torch.tensor([1, 1, 0, 0, 0, 0])  # one interaction of planted 0 lands in found 0
    part = truth.partition_scores(found)
    assert part["purity"] == pytest.approx(5 / 6)
    # ARI by hand: pair counts 4 within cells, 7 within found, 6 within planted, of 15:
    # (4 - 7 * 6 / 15) / ((7 + 6) / 2 - 7 * 6 / 15)
    assert part["ari"] == pytest.approx((4 - 2.8) / (6.5 - 2.8))


def test_purity_counts_the_majority_of_each_found_environment():
    assert purity(np.array([0, 0, 1, 1, 2]), np.array([1, 1, 0, 1, 0])) == pytest.approx(4 / 5)


def test_a_folder_without_truth_gives_none_and_half_a_truth_scores_what_it_can(tmp_path):
    assert PlantedTruth.load(tmp_path, LAYOUT, 6) is None
    _write(tmp_path, envs=[0, 1, 0, 1, 0, 1])
    truth = PlantedTruth.load(tmp_path, LAYOUT, 6)
    assert truth.mask_scores(torch.ones(9)) == {} and "ari" in truth.partition_scores(torch.zeros(6, dtype=torch.long))
    with pytest.raises(TruthFileError, match="oracle"):
        truth.oracle_mask()


@pytest.mark.parametrize("modalities, envs, message", [
    ({"v_feat": {"invariant_dims": [4]}}, None, r"modalities.v_feat.invariant_dims: expected a list of integers in \[0, 4\)"),
    ({"v_feat": {"spurious_dims": "0,1"}}, None, "modalities.v_feat.spurious_dims"),
    (None, [0, 1, 0], "train_env.npy: expected 6 non-negative integers"),
    (None, [0.5] * 6, "train_env.npy: expected 6 non-negative integers"),
])
def test_bad_truth_files_name_the_file_and_field(tmp_path, modalities, envs, message):
    _write(tmp_path, modalities, envs)
    with pytest.raises(TruthFileError, match=message):
        PlantedTruth.load(tmp_path, LAYOUT, 6)


def test_truth_json_that_is_not_json(tmp_path):
    (tmp_path / "truth.json").write_text("{modalities")
    with pytest.raises(TruthFileError, match="truth.json: expected JSON"):
        PlantedTruth.load(tmp_path, LAYOUT, 6)


def test_scores_need_both_roles_and_a_closed_spurious_gate_gives_an_infinite_ratio(tmp_path):
    for roles in ([1, 1, -1], [0, 0, -1], [1, -1, -1]):
        assert PlantedTruth(np.array(roles), None, tmp_path).mask_scores(torch.ones(3)) == {}
    truth = PlantedTruth(np.array([1, 0, -1]), None, tmp_path)
    assert truth.mask_scores(torch.tensor([0.7, 0.0, 0.3]))["gate_ratio"] == float("inf")
    assert truth.mask_scores(torch.zeros(3))["gate_ratio"] == float("inf")  # 0 / 0 as well
    assert truth.oracle_mask().dtype == np.float32 and truth.partition_scores(torch.zeros(3)) == {}


def test_a_truth_json_alone_has_no_environments_and_modalities_must_be_an_object(tmp_path):
    _write(tmp_path, {"v_feat": {"invariant_dims": [0]}})
    truth = PlantedTruth.load(tmp_path, LAYOUT, 6)
    assert truth.envs is None and truth.roles.tolist() == [1] + [-1] * 8 and truth.folder == tmp_path
    (tmp_path / "truth.json").write_text(json.dumps({"modalities": [1, 2]}))  # not an object: no roles
    assert PlantedTruth.load(tmp_path, LAYOUT, 6).roles.tolist() == [-1] * 9


def test_environment_files_are_int64_and_pickles_are_refused(tmp_path):
    _write(tmp_path, envs=np.array([0, 1, 2, 0, 1, 2], dtype=np.int32))
    envs = PlantedTruth.load(tmp_path, LAYOUT, 6).envs
    assert envs.dtype == np.int64 and envs.tolist() == [0, 1, 2, 0, 1, 2]
    np.save(tmp_path / "train_env.npy", np.array([0, 1, 0, 1, 0, 1], dtype=object), allow_pickle=True)
    with pytest.raises(TruthFileError, match=r"train_env.npy: expected a .npy array of environment ids \("):
        PlantedTruth.load(tmp_path, LAYOUT, 6)
    (tmp_path / "train_env.npy").write_text("not numpy")
    with pytest.raises(TruthFileError, match=r"train_env.npy: expected a .npy array of environment ids \("):
        PlantedTruth.load(tmp_path, LAYOUT, 6)
