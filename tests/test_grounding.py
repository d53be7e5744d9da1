"Pointing game, IoU/Dice, boxes and SIIM run-length masks on hand-made maps."
import numpy as np, pytest
from medklip.data.datasets import siim_rle_decode, siim_rle_encode
from medklip.eval.grounding import (GroundingAccumulator, boxes_to_mask, pointing_cell, pointing_game, region_metrics,
                                    resize_heatmap)


def test_pointing_game_and_tolerance():
    h = np.zeros((20, 20)); h[15, 15] = 1; m = np.zeros((20, 20), bool); m[2:10, 2:10] = True
    assert not pointing_game(h, m) and not pointing_game(h, m, tolerance=5) and pointing_game(h, m, tolerance=6)
    h[5, 5] = 2; assert pointing_game(h, m)


def test_iou_dice_by_hand():
    h = np.zeros((4, 4)); h[:2, :2] = 1; m = np.zeros((4, 4), bool); m[:2, :] = True
    r = region_metrics(h, m, 0.5)
    assert r == pytest.approx(dict(recall=0.5, precision=1.0, iou=0.5, dice=2 * 4 / 12))


def test_nearest_resize_keeps_patch_values():
    h = np.arange(4.).reshape(2, 2); r = resize_heatmap(h, (3, 5))
    assert set(np.unique(r)) <= {0., 1., 2., 3.} and r.shape == (3, 5)


def test_boxes_and_rle_roundtrip():
    m = boxes_to_mask([dict(label='x', x0=1.2, y0=0, x1=3, y1=2)], (4, 5))
    assert m.sum() == 4 and m[0, 1] and not m[0, 3]
    rng = np.random.default_rng(0); mm = rng.random((17, 13)) > 0.7
    assert (siim_rle_decode(siim_rle_encode(mm), 17, 13) == mm).all()
    assert siim_rle_decode(' -1', 3, 3).sum() == 0


def test_accumulator_states_thresholds():
    a = GroundingAccumulator(raw_threshold=0.2, norm_threshold=0.7, tolerance=2)
    h = np.zeros((5, 5)); h[1, 1] = 1; m = np.zeros((5, 5), bool); m[0:3, 0:3] = True
    a.add('x', h, m); s = a.summary()
    assert s['thresholds']['raw'] == 0.2 and s['thresholds']['normalised'] == 0.7 and s['thresholds']['pointing_tolerance_px'] == 2
    assert s['overall']['pointing_game'] == 1.0


def test_pointing_uses_cell_centre_not_corner():
    g = np.zeros((4, 4)); g[1, 2] = 1                     # 4x4 grid over a 40x80 image: cell rows 10-20, cols 40-60
    m = np.zeros((40, 80), bool); m[10:12, 40:43] = True  # the cell's top-left corner only
    assert not pointing_game(g, m) and pointing_cell(g, m)
    m[15, 50] = True; assert pointing_game(g, m)          # its centre


def test_raw_threshold_scales_with_grid():
    a = GroundingAccumulator()
    m = np.zeros((16, 16), bool); m[:8, :8] = True
    assert a.add('x', np.full((8, 8), 1 / 64), m)['raw_recall'] == 0   # uniform attention is never "attended"
    assert a.summary()['thresholds']['raw_effective'] == pytest.approx(0.008 * 196 / 64)


def test_mask_metrics_thin_region_not_defeated_by_cells():
    from medklip.eval.grounding import cell_mask, mask_metrics
    m = np.zeros((40, 40), bool); m[:, 2:4] = True          # a thin vertical band inside the first column of 4x4 cells
    assert cell_mask(m, (4, 4)).sum() == 4 and cell_mask(m, (4, 4))[:, 0].all()
    good = np.zeros((4, 4)); good[:, 0] = 1                 # attention on the band's cells: every top-k cell on the mask
    r = mask_metrics(good, m)
    assert r['grid_topk'] == 1.0 and r['grid_chance'] == 0.25 and r['energy'] == pytest.approx(0.2) and r['energy_lift'] == pytest.approx(4.0)
    bad = np.zeros((4, 4)); bad[:, 3] = 1
    assert mask_metrics(bad, m)['grid_topk'] == 0.0 and mask_metrics(bad, m)['energy'] == 0.0
    assert mask_metrics(np.ones((4, 4)), m)['energy_lift'] == pytest.approx(1.0)   # uniform attention = no lift


def test_strict_and_tolerant_pointing_reported():
    a = GroundingAccumulator()                              # pointing_tolerant: 15 px at 224 px, scaled to the image
    h = np.zeros((4, 4)); h[0, 0] = 1; m = np.zeros((224, 224), bool); m[40:60, 40:60] = True   # peak centre (28, 28): 12 px off
    row = a.add('x', h, m)
    assert row["pointing_game"] == row["pointing_strict"] == 0.0 and row['pointing_tolerant'] == 1.0 and row['pointing_cell'] == 1.0
    s = a.summary(); assert {'pointing_tolerant', 'energy', 'grid_topk'} <= set(s['classes']['x'])
