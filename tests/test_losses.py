"Existence/position losses, candidate sampling and the flip left/right swap."
import torch
import torch.nn.functional as F

from medklip.losses import (FLIP_POSITIONS, existence_loss, exist_from_matrix, flip_label_matrix, medklip_loss,
                            position_loss, sample_position_candidates)
from medklip.vocab import POSITIONS, POSITION_INDEX


def test_existence_masks_unknown_cells_exactly():
    torch.manual_seed(0)
    lg = torch.randn(3, 6, 2, dtype=torch.float64, requires_grad=True)
    ex = torch.tensor([[1, -1, 0, -1, 1, 0], [-1] * 6, [0, 0, -1, 1, -1, -1]])
    loss = existence_loss(lg, ex)
    loss.backward()
    assert (lg.grad[ex == -1] == 0).all()
    keep = ex != -1
    assert torch.allclose(loss, F.cross_entropy(lg.detach()[keep], ex[keep]))
    assert torch.autograd.gradcheck(lambda t: existence_loss(t, ex), (lg.detach().clone().requires_grad_(),))


def test_existence_all_unknown_is_zero_with_graph():
    lg = torch.randn(2, 3, 2, requires_grad=True)
    l = existence_loss(lg, torch.full((2, 3), -1))
    l.backward()
    assert l.item() == 0 and (lg.grad == 0).all()


def test_exist_vector_rule():
    m = torch.full((1, 51, 4), -1)
    m[0, 0, 0] = 1; m[0, 1, 0] = 0; m[0, 2, 1] = 0
    assert exist_from_matrix(m)[0].tolist() == [1, 0, -1, -1]


def test_candidates_positive_first_distinct_negatives():
    m = torch.full((4, 51, 5), -1)
    m[:, 7, 1] = 1; m[:, 9, 1] = 1; m[:, 3, 1] = 0
    c, v = sample_position_candidates(m, 7, torch.Generator().manual_seed(1))
    assert v[:, 1].all() and not v[:, [0, 2, 3, 4]].any()
    for b in range(4):
        assert c[b, 1, 0].item() in (7, 9)
        negs = c[b, 1, 1:].tolist()
        assert len(set(negs)) == 7 and not {7, 9} & set(negs)


def test_position_loss_masks_and_prefers_positive():
    pe = torch.randn(51, 8)
    m = torch.full((2, 51, 3), -1); m[0, 4, 0] = 1
    c, v = sample_position_candidates(m, 7, torch.Generator().manual_seed(0))
    pos = torch.randn(2, 3, 8, requires_grad=True)
    position_loss(pos, pe, c, v).backward()
    assert (pos.grad[~v] == 0).all() and pos.grad[0, 0].abs().sum() > 0
    good = torch.zeros(2, 3, 8); good[0, 0] = 10 * pe[4]
    bad = torch.zeros(2, 3, 8); bad[0, 0] = -10 * pe[4]
    assert position_loss(good, pe, c, v) < position_loss(bad, pe, c, v)
    assert torch.allclose(position_loss(good, pe, c, v, temperature=1e6), torch.log(torch.tensor(8.0)), atol=1e-3)


def test_flip_swaps_left_right_only():
    assert sorted(FLIP_POSITIONS) == list(range(len(POSITIONS)))
    for i, j in enumerate(FLIP_POSITIONS):
        a, b = POSITIONS[i], POSITIONS[j]
        if i != j:
            assert a.replace('left', 'X').replace('right', 'left').replace('X', 'right') == b
        else:
            mirrored = a.replace('left', 'X').replace('right', 'left').replace('X', 'right')
            assert mirrored == a or mirrored not in POSITION_INDEX
    m = torch.full((2, 51, 75), -1, dtype=torch.int8)
    m[:, POSITION_INDEX['left_costophrenic'], 8] = 1
    m[:, POSITION_INDEX['trachea'], 5] = 0
    f = flip_label_matrix(m, torch.tensor([True, False]))
    assert f[0, POSITION_INDEX['right_costophrenic'], 8] == 1 and f[0, POSITION_INDEX['left_costophrenic'], 8] == -1
    assert f[0, POSITION_INDEX['trachea'], 5] == 0 and torch.equal(f[1], m[1])
    assert torch.equal(flip_label_matrix(f, torch.tensor([True, False])), m)


def test_total_loss_parts():
    m = torch.full((1, 51, 2), -1); m[0, 10, 0] = 1
    out = dict(logits=torch.zeros(1, 2, 2), position=torch.zeros(1, 2, 4))
    tot, parts = medklip_loss(out, m, torch.randn(51, 4))
    assert torch.allclose(tot, parts['loss_exist'] + parts['loss_position'])
