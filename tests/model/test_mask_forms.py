import math

import numpy as np
import pytest
import torch

from recbole_invrl.model.mask_forms import MaskForm, otsu_threshold


def brute_force_otsu(values: list[float]) -> float:
    """Every cut between two neighbouring distinct values, scored by the between-group
    variance written out from its definition."""
    values = sorted(values)
    best, best_score = None, -1.0
    for k in range(1, len(values)):
        if values[k] == values[k - 1]:
            continue
        low, high = values[:k], values[k:]
        w0, w1 = len(low) / len(values), len(high) / len(values)
        score = w0 * w1 * (sum(low) / len(low) - sum(high) / len(high)) ** 2
        if score > best_score:
            best, best_score = (values[k - 1] + values[k]) / 2, score
    return best


@pytest.mark.parametrize("seed", range(5))
def test_otsu_threshold_is_the_best_between_group_split(seed):
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.uniform(0.0, 0.3, 7), rng.uniform(0.5, 1.0, 11), [0.2, 0.2]])
    assert otsu_threshold(torch.tensor(values, dtype=torch.float32)) == pytest.approx(
        brute_force_otsu(values.astype(np.float32).tolist()), abs=1e-6)


def test_otsu_threshold_separates_two_clear_groups_and_keeps_a_constant_mask_whole():
    two_groups = torch.tensor([0.9, 0.1, 0.12, 0.85, 0.95, 0.08])
    assert otsu_threshold(two_groups) == pytest.approx((0.12 + 0.85) / 2)
    assert otsu_threshold(torch.full((4,), 0.5)) == -math.inf
    assert torch.equal(MaskForm("cut")(torch.full((4,), 0.5)), torch.ones(4))


def test_each_form_against_a_hand_computed_gate():
    m = torch.tensor([0.8, 0.1, 0.5, 0.9, 0.2, 0.6])
    assert torch.equal(MaskForm("soft")(m), m)
    # cut at a number: 1 where m >= 0.5
    assert torch.equal(MaskForm("cut", cut=0.5)(m), torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0]))
    # Otsu: groups {0.1, 0.2} | {0.5, 0.6, 0.8, 0.9}, between-group variance 2/6 * 4/6 * 0.55^2
    # = 0.0672, against 0.0625 for {0.1, 0.2, 0.5} | {0.6, 0.8, 0.9}: threshold 0.35
    assert MaskForm("cut").threshold(m) == pytest.approx(0.35)
    assert torch.equal(MaskForm("cut")(m), torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0]))
    # top half: the three largest (0.9, 0.8, 0.6)
    assert torch.equal(MaskForm("top", top=0.5)(m), torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0]))
    ties = torch.tensor([0.5, 0.9, 0.5, 0.5])  # ties go by position
    assert torch.equal(MaskForm("top", top=0.5)(ties), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert torch.equal(MaskForm("top", top=0.01)(m), torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0]))
    # sharp: (m / 0.9) ** 2
    expected = torch.tensor([(v / 0.9) ** 2 for v in m.tolist()])
    torch.testing.assert_close(MaskForm("sharp", sharpness=2.0)(m), expected)
    assert torch.equal(MaskForm("sharp")(torch.zeros(3)), torch.zeros(3))


def test_soft_returns_a_copy_and_an_unknown_form_is_named():
    m = torch.tensor([0.3, 0.7])
    gate = MaskForm("soft")(m)
    gate.zero_()
    assert torch.equal(m, torch.tensor([0.3, 0.7]))
    with pytest.raises(ValueError, match="final_mask_forms: unknown form 'hard'"):
        MaskForm("hard")(m)


def test_describe_says_how_many_dims_each_form_keeps():
    m = torch.tensor([0.9, 0.1, 0.85, 0.05])
    assert MaskForm("cut").describe(m).startswith("cut at 0.4750 (otsu): 2/4 dims kept")
    assert MaskForm("soft").describe(m).startswith("soft m: 4/4 dims kept")


def test_otsu_needs_two_distinct_values_whatever_their_positions():
    assert otsu_threshold(torch.tensor([0.8, 0.2])) == pytest.approx(0.5)  # two values: the midpoint
    assert otsu_threshold(torch.tensor([0.5, 0.1, 0.5])) == pytest.approx(0.3)  # the largest value repeated
    assert otsu_threshold(torch.tensor([0.9, 0.5, 0.5])) == pytest.approx(0.7)  # the smallest value repeated
    assert otsu_threshold(torch.tensor([0.4])) == -math.inf


def test_a_numeric_cut_is_used_as_given_and_the_settings_come_from_the_config():
    m = torch.tensor([0.1, 0.2, 0.3, 0.9])  # Otsu would cut at 0.6
    form = MaskForm("cut", cut=0.25)
    assert form.threshold(m) == 0.25 and torch.equal(form(m), torch.tensor([0.0, 0.0, 1.0, 1.0]))
    config = {"final_mask_cut": 0.7, "final_mask_top": 0.25, "final_mask_sharpness": 3.0}
    assert MaskForm.from_config(config, "top") == MaskForm("top", 0.7, 0.25, 3.0)


def test_top_keeps_the_first_positions_among_many_ties():
    m = torch.full((64,), 0.5)
    m[40] = 0.9
    gate = MaskForm("top", top=0.25)(m)  # 16 kept: position 40, then positions 0-14
    assert gate.nonzero().squeeze(1).tolist() == list(range(15)) + [40]


def test_unknown_forms_list_the_known_ones_and_describe_names_each_form():
    with pytest.raises(ValueError, match=r"expected one of soft, cut, top, sharp$"):
        MaskForm("hard")(torch.ones(2))
    m = torch.tensor([0.9, 0.1, 0.85, 0.05])
    assert MaskForm("top", top=0.5).describe(m) == "top 0.5: 2/4 dims kept, mean gate 0.500"
    assert MaskForm("sharp", sharpness=2.0).describe(m).startswith("sharpness 2: 4/4 dims kept, mean gate ")
    assert MaskForm("cut", cut=0.5).describe(m) == "cut at 0.5000 (0.5): 2/4 dims kept, mean gate 0.500"
