"Batched RandAugment (medklip.augment) and its use in training's augment()."
import numpy as np
import torch
import torch.nn.functional as F

from medklip.augment import RANDAUGMENT_OPS, rand_augment
from medklip.train import DEFAULTS, augment, resolve_settings


def test_paper_defaults_use_upstream_randaugment():
    assert (DEFAULTS['randaugment_ops'], DEFAULTS['randaugment_magnitude']) == (2, 7.0)
    assert len(RANDAUGMENT_OPS) == 10 and resolve_settings({'randaugment_ops': 0})['randaugment_ops'] == 0


def test_seeded_by_the_generator_and_reproducible():
    x = torch.rand(12, 1, 32, 32)
    a = rand_augment(x, 2, 7, torch.Generator().manual_seed(5))
    torch.manual_seed(123)                      # the global generator must not matter
    b = rand_augment(x, 2, 7, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, rand_augment(x, 2, 7, torch.Generator().manual_seed(6)))


def test_static_form_equals_the_gathered_one(monkeypatch):
    "The masked, shape-static RandAugment (GPU path: no host-device sync) gives the per-op gathered result up to float rounding."
    x = torch.rand(16, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    for seed in range(6):
        a, A = rand_augment(x, 2, 7, torch.Generator().manual_seed(seed), return_affine=True, static=False)
        b, B = rand_augment(x, 2, 7, torch.Generator().manual_seed(seed), return_affine=True, static=True)
        assert torch.allclose(a, b, atol=1e-6) and torch.equal(A, B) and not torch.equal(a, x)
    monkeypatch.setenv('MEDKLIP_GPU_PATHS_ON_CPU', '1')   # the GPU path's CPU rehearsal takes the static form
    assert torch.equal(rand_augment(x, 2, 7, torch.Generator().manual_seed(1)), rand_augment(x, 2, 7, torch.Generator().manual_seed(1), static=True))


def test_augment_keeps_flip_label_swap_and_geometry():
    imgs = torch.zeros(16, 40, 40, dtype=torch.uint8); imgs[:, :, :20] = 200   # bright image-left half
    m = torch.full((16, 51, 75), -1, dtype=torch.int8)
    kw = dict(image_size=32, mean=0.5, std=0.25, crop_scale=(1.0, 1.0), jitter=0.0, return_geometry=True)
    g = lambda: torch.Generator().manual_seed(0)
    x0, _, (th0, f0) = augment(imgs, m, generator=g(), **kw)
    x1, _, (th1, f1) = augment(imgs, m, generator=g(), randaugment_ops=2, randaugment_magnitude=7, **kw)
    assert torch.equal(f0, f1)                  # the same flips (and so label swaps) with and without RandAugment
    assert not torch.equal(x0, x1)
    # the returned affine maps the source image onto the augmented one (for anatomy maps), RandAugment included
    src = imgs.unsqueeze(1).float() / 255
    warped = F.grid_sample(src, F.affine_grid(th1, (16, 1, 32, 32), align_corners=False), align_corners=False, padding_mode='border')
    got = x1[:, :1] * 0.25 + 0.5
    inside = (F.grid_sample(torch.ones_like(src), F.affine_grid(th1, (16, 1, 32, 32), align_corners=False), align_corners=False) > 0.99)
    d = (got - warped).abs()[inside]
    assert d.mean() < 0.05, d.mean()

