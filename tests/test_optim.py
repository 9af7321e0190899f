import torch

from recbole_invrl.optim import fused_copy
from recbole_invrl.utils import get_trainer


def _params():
    generator = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(5, 3, generator=generator)) for _ in range(2)]


def test_fused_copy_keeps_class_groups_and_settings():
    first, second = _params()
    optimizer = torch.optim.AdamW([{"params": [first], "lr": 0.1}, {"params": [second]}],
                                  lr=0.01, weight_decay=0.3)
    fused = fused_copy(optimizer)
    assert type(fused) is torch.optim.AdamW
    assert [g["fused"] for g in fused.param_groups] == [True, True]
    assert [g["lr"] for g in fused.param_groups] == [0.1, 0.01]
    assert fused.param_groups[1]["weight_decay"] == 0.3
    assert fused.param_groups[0]["params"][0] is first


def test_fused_adam_takes_the_same_steps_up_to_rounding():
    params = [_params(), _params()]
    optimizers = [torch.optim.Adam(params[0], lr=0.05), fused_copy(torch.optim.Adam(params[1], lr=0.05))]
    for step in range(5):
        for group, optimizer in zip(params, optimizers):
            optimizer.zero_grad()
            sum((p * (step + 1)).sin().sum() for p in group).backward()
            optimizer.step()
    for plain, fused in zip(*params):
        torch.testing.assert_close(plain, fused)
        assert not torch.equal(plain, _params()[0])  # they moved


def test_other_optimizers_and_started_ones_are_left_alone():
    sgd = torch.optim.SGD(_params(), lr=0.1)
    assert fused_copy(sgd) is sgd
    params = _params()
    started = torch.optim.Adam(params, lr=0.1)
    sum(p.sum() for p in params).backward()
    started.step()
    assert fused_copy(started) is started


def test_recbole_trainers_build_fused_adam_unless_switched_off(build, atomic_dataset, tmp_path):
    from recbole_invrl.model.general_recommender import UltraGCNMM

    atomic_dataset(tmp_path, "toy", [(1, 1), (1, 2), (2, 2), (2, 3), (3, 4)], [(1, 3)], [(2, 4)],
                   dense={"v_feat": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [0.5, 3.0]]})
    for switch, expected in ((True, True), (False, None)):
        config, _, train, *_ = build("UltraGCNMM", "toy", fused_optimizer=switch)
        trainer = get_trainer(config["MODEL_TYPE"], "UltraGCNMM")(config, UltraGCNMM(config, train._dataset))
        assert type(trainer.optimizer) is torch.optim.Adam
        assert trainer.optimizer.param_groups[0]["fused"] is expected
