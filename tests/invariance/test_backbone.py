"""The sizes ``InvarianceParts`` reports are read off its tensors' shapes."""
import torch

from recbole_invrl.invariance.backbone import ForwardParts, InvarianceParts


def test_parts_report_the_sizes_of_their_tensors():
    parts = InvarianceParts(user_ids=torch.zeros(7, 3), item_ids=torch.zeros(11, 3), user_content=torch.zeros(7, 5),
                            projection=torch.zeros(5, 13), content_rows=lambda items: None, content_reg=0.2,
                            id_reg=0.4)
    assert (parts.n_users, parts.n_items, parts.id_size, parts.content_size, parts.dim) == (7, 11, 3, 5, 13)
    assert (parts.content_reg, parts.id_reg) == (0.2, 0.4)


def test_forward_parts_have_no_content_l2_unless_given():
    weight = torch.nn.Parameter(torch.zeros(2, 3))
    parts = ForwardParts(weights=[(weight, 4)], frozen=[])
    assert parts.content_reg == 0.0 and parts.weights[0][1] == 4
