"MedKLIP network: shapes, extra queries, heatmaps, parameter count, offline pretrained-weight error."
import os, subprocess, sys
import pytest
import torch

from medklip.core import MedklipError
from medklip.model import MedKLIP, MedKLIPConfig, ResNetTrunk, count_parameters, preprocess, upsample_heatmap

TINY = dict(backbone='tiny', image_size=64, d_model=32, layers=2, heads=4, ffn=64, text_dim=24)


def test_shapes_and_extra_queries():
    m = MedKLIP(MedKLIPConfig(**TINY)).eval()
    x = torch.randn(3, 3, 64, 64)
    q = torch.randn(75, 24)
    o = m(x, q)
    assert o['logits'].shape == (3, 75, 2) and o['position'].shape == (3, 75, 24) and o['attn'].shape == (3, 75, 4, 4)
    extra = torch.randn(2, 24)
    o2 = m(x, torch.cat([q, extra]))
    assert o2['logits'].shape == (3, 77, 2)
    # queries are decoded jointly (self-attention), but a query row is an input, never a learned parameter
    assert not any(p.shape == (75, 32) for p in m.parameters())


def test_heatmap_is_a_distribution_and_upsamples():
    m = MedKLIP(MedKLIPConfig(**TINY)).eval()
    a = m(torch.randn(2, 3, 64, 64), torch.randn(5, 24))['attn']
    assert torch.allclose(a.sum((-1, -2)), torch.ones(2, 5), atol=1e-5) and (a >= 0).all()
    h = upsample_heatmap(a, (64, 96))
    assert h.shape == (2, 5, 64, 96)
    assert torch.equal(h[..., :16, :24].amax((-1, -2)), a[..., 0, 0])  # nearest: a patch fills its block
    assert upsample_heatmap(a, (30, 30), mode='bilinear').shape == (2, 5, 30, 30)


def test_real_config_parameter_count_and_grid():
    m = MedKLIP(MedKLIPConfig())
    total = count_parameters(m, exclude=None)
    assert 14.0e6 < total < 15.0e6
    assert m.backbone(torch.zeros(1, 3, 224, 224)).shape == (1, 1024, 14, 14)


def test_init_normal_002():
    m = MedKLIP(MedKLIPConfig(**TINY))
    w = m.decoder.layers[0].multihead_attn.in_proj_weight
    assert abs(w.std().item() - 0.02) < 0.003 and m.classifier.bias.abs().sum() == 0


def test_pretrained_offline_names_parameter(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(MedklipError, match='pretrained'):
        ResNetTrunk(pretrained='microsoft/resnet-50-definitely-not-cached')


def test_preprocess_resizes_and_normalises():
    x = torch.randint(0, 256, (2, 40, 50), dtype=torch.uint8)
    y = preprocess(x, 32, 0.5, 0.25)
    assert y.shape == (2, 3, 32, 32) and y.dtype == torch.float32
    assert torch.equal(y[:, 0], y[:, 2])
    z = preprocess(torch.full((1, 32, 32), 128, dtype=torch.uint8), 32, 0.5, 0.25)
    assert torch.allclose(z, torch.full_like(z, (128 / 255 - 0.5) / 0.25), atol=1e-6)


def test_grey_stem_shortcut_matches_full_stem_and_gradient():
    torch.manual_seed(0)
    t = ResNetTrunk('tiny').train()
    g = torch.randn(3, 1, 64, 64)
    outs, grads = [], []
    for x in (g.expand(-1, 3, -1, -1), g.repeat(1, 3, 1, 1)):   # expanded view takes the shortcut, a real copy does not
        t.zero_grad(); y = t(x); (y ** 2).mean().backward()
        outs.append(y.detach()); grads.append(t.embedder.embedder.convolution.weight.grad.clone())
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-6)


def test_stride8_grid_and_patch_features():
    "stride=8 doubles the heatmap grid (same weights' shapes); the output carries the patch features the queries attend to."
    c16 = MedKLIPConfig(backbone='tiny', image_size=64, d_model=32, layers=1, heads=2, ffn=64, text_dim=24)
    c8 = MedKLIPConfig(**{**c16.to_dict(), 'stride': 8})
    m16, m8 = MedKLIP(c16).eval(), MedKLIP(c8).eval()
    assert {k: v.shape for k, v in m16.state_dict().items()} == {k: v.shape for k, v in m8.state_dict().items()}
    o = m8(torch.randn(2, 3, 64, 64), torch.randn(5, 24))
    assert o['attn'].shape == (2, 5, 8, 8) and o['feats'].shape == (2, 64, 32) and c8.grid == 8
    assert m16(torch.randn(2, 3, 64, 64), torch.randn(5, 24))['attn'].shape == (2, 5, 4, 4)
    assert MedKLIPConfig().stride == 16 and MedKLIPConfig().grid == 14


@pytest.mark.parametrize("name,stride", [('tiny', 8), ('resnet18', 16), ('resnet50', 16), ('resnet50', 8)])
def test_plain_trunk_is_transformers_resnet_draw_for_draw(name, stride):
    "The plain-torch trunk has `transformers`' ResNet parameter names, the same random weights from a seed, the same RNG state after, and the same output."
    from transformers import ResNetConfig, ResNetModel
    from medklip.model import BACKBONES
    torch.manual_seed(0); full = ResNetModel(ResNetConfig(num_channels=3, downsample_in_first_stage=False, **BACKBONES[name])); r0 = torch.rand(4)
    torch.manual_seed(0); mine = ResNetTrunk(name, None, stride); r1 = torch.rand(4)
    ref = {k: v for k, v in full.state_dict().items() if k.startswith('embedder.')}
    ref |= {k.removeprefix('encoder.'): v for k, v in full.state_dict().items() if k.startswith('encoder.')}
    sd = mine.state_dict()
    assert set(sd) == set(ref) and all(torch.equal(sd[k], ref[k]) for k in sd) and torch.equal(r0, r1)
    if stride == 8:
        for m in full.encoder.stages[2].layers[0].modules():
            if isinstance(m, torch.nn.Conv2d): m.stride = (1, 1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = full.encoder.stages[2](full.encoder.stages[1](full.encoder.stages[0](full.embedder(x))))
        assert torch.equal(mine(x), y)


def test_hub_weights_load_into_the_plain_trunk(tmp_path):
    "A hub-format ResNet (here a tiny one saved locally) loads parameter for parameter; `transformers` is needed only for that."
    from transformers import ResNetConfig, ResNetModel
    torch.manual_seed(1); full = ResNetModel(ResNetConfig(num_channels=3, layer_type='basic', depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], embedding_size=8))
    full.save_pretrained(tmp_path/'r')
    t = ResNetTrunk('tiny', str(tmp_path/'r'), 16)
    assert t.out_channels == 24 and len(t.stages) == 3
    assert torch.equal(t.stages[1].layers[0].layer[0].convolution.weight, full.encoder.stages[1].layers[0].layer[0].convolution.weight)


def test_building_the_model_does_not_import_transformers():
    "Every pipeline process builds a model; `transformers`' ResNet import cost about 5 s of each (it is for the text encoder and hub weights only)."
    code = ("import sys; from medklip.model import MedKLIP, MedKLIPConfig; import medklip.train, medklip.eval.zeroshot, medklip.api; "
            "MedKLIP(MedKLIPConfig(backbone='tiny', image_size=64, d_model=32, layers=1, heads=2, ffn=64, text_dim=16)); "
            "sys.exit(int('transformers' in sys.modules))")
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0


def test_hub_resnet_of_another_layout_is_refused(tmp_path):
    "A hub ResNet that downsamples in its first stage would load with the wrong strides: refused in one line."
    from transformers import ResNetConfig, ResNetModel
    ResNetModel(ResNetConfig(num_channels=3, layer_type='basic', depths=[1, 1, 1], hidden_sizes=[8, 16, 24], embedding_size=8,
                             downsample_in_first_stage=True)).save_pretrained(tmp_path/'r')
    with pytest.raises(MedklipError, match='first stage'): ResNetTrunk('tiny', str(tmp_path/'r'), 16)
