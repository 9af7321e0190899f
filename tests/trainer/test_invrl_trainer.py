import json
import os

import numpy as np
import pytest
import torch

from recbole_invrl.model.mask_forms import MaskForm
from recbole_invrl.quick_start import run_recbole_invrl
from recbole_invrl.trainer import InvRLTrainer
from recbole_invrl.utils import get_trainer

SCHEDULE = dict(pretrain_epochs=2, epochs=2, invrl_iterations=2, partition_epochs=1,
                partition_rounds=2, mask_epochs=2, num_envs=3, neg_num=5, train_batch_size=128,
                show_progress=False, stopping_step=5)


@pytest.fixture
def clusters(tmp_path, clusters_dataset):
    clusters_dataset(tmp_path, n_users=24, n_items=36, extra=np.random.default_rng(0).random((36, 3)),
                     words=[[i % 5 + 1, 7] for i in range(36)])
    return tmp_path


def run(data_path, **overrides):
    return run_recbole_invrl("InvRL", "clusters", config_dict={
        "data_path": str(data_path), **SCHEDULE, **overrides})


def assert_final_gate(state_dict, result, **form_settings):
    """The final model's checkpoint holds the gate of the form the run kept, made from its m."""
    record = json.loads(open(result["record_path"]).read())
    mask = torch.from_numpy(np.load(result["mask_path"]))
    expected = MaskForm(record["final_form"], **form_settings)(mask)
    torch.testing.assert_close(state_dict["final.content.content_mask"], expected)
    assert record["final_form"] in {entry["form"] for entry in record["final"]}


def test_get_trainer_picks_the_invrl_trainer():
    from recbole.utils import ModelType

    assert get_trainer(ModelType.GENERAL, "InvRL") is InvRLTrainer


def test_run_writes_mask_record_and_result_fields(clusters):
    result = run(clusters)
    mask = np.load(result["mask_path"])
    assert result["mask_fields"] == [["v_feat", 5], ["t_words", 128]]
    assert mask.shape == (133,) and (mask >= 0).all() and (mask <= 1).all()
    record = json.loads(open(result["record_path"]).read())
    assert [m["iteration"] for m in record["mask"]] == [1, 2]
    assert all(len(m["mask"]) == 133 for m in record["mask"])
    assert record["partition"] and all(0 <= p["moved_share"] <= 1 for p in record["partition"])
    assert set(record["stage_seconds"]) == {"pretrain", "partition-1", "mask-1", "partition-2",
                                            "mask-2", "final"}
    assert "ndcg@10" in result["test_result"] and "ndcg@10" in result["best_valid_result"]
    checkpoint = torch.load(result["saved_model_file"], weights_only=True)
    np.testing.assert_allclose(checkpoint["state_dict"]["mask"].numpy(), mask)
    assert_final_gate(checkpoint["state_dict"], result)


def test_resume_after_a_kill_between_stages_gives_the_uninterrupted_result(clusters, monkeypatch):
    uninterrupted = run(clusters)
    real_learn_mask = InvRLTrainer.learn_mask

    def killed_at_second_mask(self, t, *args, **kwargs):
        if t == 2:
            raise KeyboardInterrupt("killed")
        return real_learn_mask(self, t, *args, **kwargs)

    monkeypatch.setattr(InvRLTrainer, "learn_mask", killed_at_second_mask)
    with pytest.raises(KeyboardInterrupt):
        run(clusters)
    monkeypatch.setattr(InvRLTrainer, "learn_mask", real_learn_mask)
    calls = []
    monkeypatch.setattr(InvRLTrainer, "pretrain", lambda self, *a, **k: calls.append("pretrain"))
    resumed = run(clusters, resume=True)

    assert calls == []  # pretraining was not redone
    np.testing.assert_array_equal(np.load(resumed["mask_path"]), np.load(uninterrupted["mask_path"]))
    assert resumed["test_result"] == uninterrupted["test_result"]
    assert resumed["best_valid_result"] == uninterrupted["best_valid_result"]


def test_same_seed_same_mask_other_seed_other_mask(clusters):
    first, second = run(clusters), run(clusters)
    other = run(clusters, seed=7)
    np.testing.assert_array_equal(np.load(first["mask_path"]), np.load(second["mask_path"]))
    assert not np.array_equal(np.load(first["mask_path"]), np.load(other["mask_path"]))


def test_more_environments_than_the_data_fills(clusters):
    result = run(clusters, num_envs=40, invrl_iterations=1)
    record = json.loads(open(result["record_path"]).read())
    assert any(0 in p["env_sizes"] for p in record["partition"])
    assert np.isfinite(np.load(result["mask_path"])).all()


def test_pretrained_backbone_can_be_loaded(clusters):
    backbone = run_recbole_invrl("UltraGCNMM", "clusters", config_dict={
        "data_path": str(clusters), **SCHEDULE})
    calls = []
    original = torch.load

    def spy(path, *args, **kwargs):
        calls.append((str(path), kwargs.get("weights_only")))
        return original(path, *args, **kwargs)

    torch.load = spy
    try:
        result = run(clusters, pretrained_path=backbone["saved_model_file"], invrl_iterations=1)
    finally:
        torch.load = original
    assert (backbone["saved_model_file"], True) in calls
    assert "ndcg@10" in result["test_result"]


def test_end_to_end_on_the_spurious_feature_test_bed(tmp_path):
    """On the planted test bed InvRL gates the invariant dims above the spurious (style) ones."""
    from recbole_invrl.data.synthetic import generate

    folder = generate("tiktok", 0.005, tmp_path, layout="atomic", seed=0, name="bed")
    truth = json.loads((folder / "truth.json").read_text())["modalities"]
    result = run_recbole_invrl("InvRL", "bed", config_dict={
        "data_path": str(tmp_path), "show_progress": False, "pretrain_epochs": 15, "epochs": 5,
        "invrl_iterations": 2, "num_envs": 2, "partition_epochs": 5, "partition_rounds": 3,
        "mask_epochs": 10, "mask_lr": 0.01, "learning_rate": 0.01, "neg_num": 20})
    mask = np.load(result["mask_path"])
    offset, invariant, spurious = 0, [], []
    for field, width in result["mask_fields"]:
        if "invariant_dims" in truth.get(field, {}):
            invariant += [offset + d for d in truth[field]["invariant_dims"]]
            spurious += [offset + d for d in truth[field]["spurious_dims"]]
        offset += width
    assert len(invariant) == len(spurious) == 128  # v_feat and a_feat, half of each
    assert mask[invariant].mean() > mask[spurious].mean() + 0.1
    for split in ("best_valid_result", "test_result"):
        assert {"ndcg@10", "recall@10", "precision@10"} <= set(result[split])


def test_a_fixed_mask_skips_stages_0_to_m4_and_reaches_the_final_model(clusters, tmp_path, monkeypatch):
    mask = np.linspace(0.0, 1.0, 133).astype(np.float32)
    np.save(tmp_path / "given.npy", mask)
    monkeypatch.setattr(InvRLTrainer, "pretrain", lambda *a, **k: pytest.fail("pretrained with a fixed mask"))
    monkeypatch.setattr(InvRLTrainer, "partition", lambda *a, **k: pytest.fail("partitioned with a fixed mask"))
    result = run(clusters, fixed_mask=str(tmp_path / "given.npy"))
    checkpoint = torch.load(result["saved_model_file"], weights_only=True)["state_dict"]
    assert_final_gate(checkpoint, result)
    np.testing.assert_array_equal(np.load(result["mask_path"]), mask)


@pytest.mark.parametrize("saved, message", [
    (np.ones(5, dtype=np.float32), r"expected 133 floats in \[0, 1\]"),
    (np.full(133, 1.5, dtype=np.float32), r"expected 133 floats in \[0, 1\]"),
    (np.arange(133), r"expected 133 floats"),
])
def test_a_bad_fixed_mask_is_refused_with_its_file_named(clusters, tmp_path, saved, message):
    path = tmp_path / "bad.npy"
    np.save(path, saved)
    with pytest.raises(ValueError, match=f"fixed_mask: {path}: {message}"):
        run(clusters, fixed_mask=str(path))


def test_a_planted_truth_in_the_dataset_folder_is_scored_in_the_record(clusters, tmp_path):
    folder = clusters / "clusters"
    n_train = len((folder / "clusters.train.inter").read_text().splitlines()) - 1
    np.save(folder / "train_env.npy", np.arange(n_train) % 2)
    (folder / "truth.json").write_text(json.dumps(
        {"modalities": {"v_feat": {"invariant_dims": [0, 1], "spurious_dims": [2, 3, 4]}}}))
    record = json.loads(open(run(clusters)["record_path"]).read())
    assert all(-1 <= p["ari"] <= 1 and 0.5 <= p["purity"] <= 1 for p in record["partition"])
    assert all(0 <= m["auc"] <= 1 and m["gate_ratio"] > 0 for m in record["mask"])
    for entry in record["mask"]:
        assert {"risk", "alpha_penalty", "lambda_regulariser", "grad_norm_risk", "grad_norm_penalty",
                "grad_norm_regulariser", "penalty_share"} <= set(entry["epochs"][0])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folder / "truth.json").rename(elsewhere / "truth.json")
    (folder / "train_env.npy").rename(elsewhere / "train_env.npy")
    assert "ari" not in json.loads(open(run(clusters)["record_path"]).read())["partition"][0]
    record = json.loads(open(run(clusters, truth_dir=str(elsewhere))["record_path"]).read())
    assert "ari" in record["partition"][0] and "auc" in record["mask"][0]


def test_invrl_over_vbpr_runs_every_stage_and_its_mask_reaches_the_final_model(clusters, monkeypatch):
    from recbole_invrl.model.general_recommender import VBPR

    stages = []
    real_fit = InvRLTrainer.learn_mask
    monkeypatch.setattr(InvRLTrainer, "learn_mask", lambda self, *a, **k: (stages.append("M4"), real_fit(self, *a, **k)))
    schedule = {k: v for k, v in SCHEDULE.items() if k != "neg_num"}  # VBPR has no neg_num
    result = run_recbole_invrl("InvRL", "clusters", config_dict={
        "data_path": str(clusters), **schedule, "invrl_backbone": "VBPR", "partition_assign": "likelihood"})
    assert stages == ["M4", "M4"]
    checkpoint = torch.load(result["saved_model_file"], weights_only=True)["state_dict"]
    assert "final.visual_projection.weight" in checkpoint and "backbone.content_bias.weight" in checkpoint
    mask = np.load(result["mask_path"])
    assert_final_gate(checkpoint, result)
    assert not np.allclose(mask, 0.5)  # M4 moved it
    record = json.loads(open(result["record_path"]).read())
    assert len(record["partition"]) == 4 and all(sum(p["env_sizes"]) > 0 for p in record["partition"])
    from recbole_invrl.config import Config
    config = Config("InvRL", "clusters", config_dict={"data_path": str(clusters), "invrl_backbone": "VBPR"})
    assert config["reg_weight"] == 0.0001  # VBPR.yaml is read, then InvRL.yaml
    assert config["neg_num"] is None and config["partition_samples"] == 50  # M3's own sample count
    assert config["train_neg_sample_args"]["distribution"] == "none"
    assert VBPR.content_reg_key is None  # no final_proj_reg_weight override for VBPR


def test_invrl_over_duif_trains_the_final_duif_on_the_mask(clusters):
    from recbole_invrl.model.general_recommender import DUIF

    result = run(clusters, invrl_backbone="DUIF", final_proj_reg_weight=0.25)
    checkpoint = torch.load(result["saved_model_file"], weights_only=True)["state_dict"]
    assert "final.projection.weight" in checkpoint and "final.user_embedding.weight" in checkpoint
    mask = np.load(result["mask_path"])
    assert_final_gate(checkpoint, result)
    assert not np.allclose(mask, 0.5)
    assert DUIF.content_reg_key == "proj_reg_weight"


@pytest.mark.parametrize("name, weight", [("MMGCN", "modalities.0.input_map.weight"),
                                          ("GRCN", "refiners.0.projection.weight")])
def test_invrl_over_a_graph_model_takes_the_forward_path_and_its_mask_reaches_the_final_model(
        clusters, monkeypatch, name, weight):
    from recbole_invrl.invariance.forward_path import ForwardMaskLearner

    learners = []
    real_learn_mask = InvRLTrainer.learn_mask
    monkeypatch.setattr("recbole_invrl.trainer.invrl_trainer.mask_learner_for",
                        lambda *a, **k: learners.append(ForwardMaskLearner(*a, **k)) or learners[-1])
    result = run(clusters, invrl_backbone=name, latent_size=3, word_embedding_size=4)
    assert len(learners) == 2 and real_learn_mask is InvRLTrainer.learn_mask
    checkpoint = torch.load(result["saved_model_file"], weights_only=True)["state_dict"]
    assert f"final.{weight}" in checkpoint and f"backbone.{weight}" in checkpoint
    mask = np.load(result["mask_path"])
    assert_final_gate(checkpoint, result)
    assert not np.allclose(mask, 0.5)
    record = json.loads(open(result["record_path"]).read())
    assert len(record["partition"]) >= 2 and all(sum(p["env_sizes"]) > 0 for p in record["partition"])
    last = record["mask"][-1]["epochs"][-1]
    assert last["alpha_penalty"] > 0 and 0 < last["penalty_share"] < 1


@pytest.mark.parametrize("name", ["LATTICE", "FREEDOM"])
def test_a_model_without_either_form_is_refused_as_backbone(clusters, name):
    with pytest.raises(ValueError, match=f"invrl_backbone: '{name}' cannot be InvRL's backbone"):
        run(clusters, invrl_backbone=name)


def test_a_path_the_backbone_lacks_is_refused_before_training(clusters, monkeypatch):
    monkeypatch.setattr(InvRLTrainer, "pretrain", lambda *a, **k: pytest.fail("pretraining started"))
    with pytest.raises(ValueError, match="invariance_path: eq14 needs invariance_parts, which invrl_backbone 'MMGCN'"):
        run(clusters, invrl_backbone="MMGCN", invariance_path="eq14")


def test_a_backbone_without_invariance_parts_is_refused(clusters):
    with pytest.raises(ValueError, match="invrl_backbone: 'BPR' cannot be InvRL's backbone"):
        run(clusters, invrl_backbone="BPR")


def _state_files(result):
    import glob
    import os

    return sorted(glob.glob(os.path.join(os.path.dirname(result["outputs"]["state"]), "*.state.pth")))


def test_runs_with_other_stage_settings_keep_their_own_state(clusters):
    first = run(clusters, checkpoint_dir=str(clusters / "saved"))
    first_state = first["outputs"]["state"]
    first_bytes = open(first_state, "rb").read()
    second = run(clusters, checkpoint_dir=str(clusters / "saved"), num_envs=2)
    assert second["outputs"]["state"] != first_state
    assert len(_state_files(first)) == 2
    assert open(first_state, "rb").read() == first_bytes
    # a setting of the final model only keeps the same state
    third = run(clusters, checkpoint_dir=str(clusters / "saved"), final_proj_reg_weight=0.5)
    assert third["outputs"]["state"] == first_state


def test_resume_refuses_a_state_written_under_other_settings(clusters):
    from recbole_invrl.settings import SettingsError

    first = run(clusters, checkpoint_dir=str(clusters / "saved"))
    state = torch.load(first["outputs"]["state"], weights_only=False)
    state["settings"]["num_envs"] = "7"
    torch.save(state, first["outputs"]["state"])
    with pytest.raises(SettingsError, match="num_envs"):
        run(clusters, checkpoint_dir=str(clusters / "saved"), resume=True)


def test_a_failed_run_leaves_no_result_and_keeps_the_other_runs_state(clusters, monkeypatch):
    import os

    first = run(clusters, checkpoint_dir=str(clusters / "saved"))
    first_bytes = open(first["outputs"]["state"], "rb").read()
    before = set(os.listdir(clusters / "saved"))

    from recbole_invrl.model.general_recommender import InvRL

    def broken_final(self, *args, **kwargs):
        raise RuntimeError("final stage failed")

    monkeypatch.setattr(InvRL, "start_final_model", broken_final)
    with pytest.raises(RuntimeError, match="final stage failed"):
        run(clusters, checkpoint_dir=str(clusters / "saved"), num_envs=2)
    new = set(os.listdir(clusters / "saved")) - before
    assert open(first["outputs"]["state"], "rb").read() == first_bytes
    assert not [f for f in new if f.endswith(("-pretrain.pth", "-mask.npy", "-record.json"))]
    assert not [f for f in new if f.endswith(".pth") and not f.endswith(".state.pth")]
    assert [f for f in new if f.endswith("-record.failed.json")]


def test_the_summary_names_files_that_exist_and_log_and_checkpoint_share_a_stem(clusters):
    import os

    from recbole_invrl.quick_start import format_summary

    result = run(clusters, checkpoint_dir=str(clusters / "saved"))
    outputs = result["outputs"]
    assert {"log", "checkpoint", "mask", "record", "state"} <= set(outputs)
    assert all(os.path.exists(path) for path in outputs.values())
    stem = lambda p: os.path.splitext(os.path.basename(p))[0]
    assert stem(outputs["log"]) == stem(outputs["checkpoint"])
    summary = format_summary(result)
    assert all(path in summary for path in outputs.values()) and "ndcg" in summary.lower()


def test_each_form_gets_a_fresh_final_model_and_the_best_on_validation_is_kept(clusters, monkeypatch):
    from recbole.trainer import Trainer

    starts = []
    real_fit = Trainer.fit

    def fit(self, *args, **kwargs):
        if isinstance(self, InvRLTrainer):
            starts.append({k: v.clone() for k, v in self.model.final.state_dict().items()})
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", fit)
    result = run(clusters, final_mask_forms=["soft", "cut", "top"], final_mask_top=0.25, final_proj_reg_weight=0.1)
    record = json.loads(open(result["record_path"]).read())
    assert [entry["form"] for entry in record["final"]] == ["soft", "cut", "top"]
    scores = [entry["valid_score"] for entry in record["final"]]
    best = record["final"][int(np.argmax(scores))]
    assert record["final_form"] == best["form"] and result["best_valid_score"] == pytest.approx(max(scores))
    kept = {entry["form"]: entry["kept_dims"] for entry in record["final"]}
    assert kept["soft"] == int((np.load(result["mask_path"]) > 0).sum()) and kept["top"] == 34  # ceil(0.25 x 133)
    checkpoint = torch.load(result["saved_model_file"], weights_only=True)["state_dict"]
    assert_final_gate(checkpoint, result, top=0.25)
    stem = result["saved_model_file"][: -len(".pth")]
    assert not any(os.path.exists(f"{stem}-{form}.pth") for form in ("soft", "cut", "top"))
    assert len(starts) == 3  # every final model starts from the same weights, but for its gate
    for start in starts[1:]:
        for key, value in start.items():
            if key != "content.content_mask":
                torch.testing.assert_close(value, starts[0][key])


def test_forms_that_give_the_same_gate_train_one_final_model(clusters, tmp_path):
    np.save(tmp_path / "ones.npy", np.ones(133, dtype=np.float32))
    result = run(clusters, fixed_mask=str(tmp_path / "ones.npy"), final_mask_forms=["soft", "cut"],
                 final_proj_reg_weight=0.1)
    record = json.loads(open(result["record_path"]).read())
    assert [entry["form"] for entry in record["final"]] == ["soft"] and record["final_form"] == "soft"
    assert os.path.isfile(result["saved_model_file"])


def test_a_list_of_final_l2_values_is_tried_and_the_best_on_validation_kept(clusters):
    result = run(clusters, final_mask_forms="soft", final_proj_reg_weight=[0.01, 10.0])
    record = json.loads(open(result["record_path"]).read())
    tried = [(entry["form"], entry["final_proj_reg_weight"]) for entry in record["final"]]
    assert tried == [("soft", 0.01), ("soft", 10.0)]
    best = max(record["final"], key=lambda entry: entry["valid_score"])
    assert record["final_proj_reg_weight"] == best["final_proj_reg_weight"]
    assert result["best_valid_score"] == pytest.approx(best["valid_score"])
