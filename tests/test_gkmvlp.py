"GK-MVLP option: anatomy warp matches the image warp, losses are finite with gradients into the trunk, off = unchanged training."
import numpy as np
import pytest
import torch

import medklip.train as T
from medklip.core import MedklipError
from medklip.methods import gkmvlp as G
from medklip.model import MedKLIP, MedKLIPConfig
from medklip.vocab import ENTITY_INDEX, POSITION_INDEX

TINY = dict(backbone='tiny', image_size=32, stride=8, d_model=32, layers=1, heads=2, ffn=64, batch_size=6, epochs=1, lr=1e-3,
            warmup_steps=2, workers=0, val_batch_size=16, threads=1)
TABLE = G.RegionTable(dict(regions={'1': 'right_pleural', '2': 'left_pleural', '3': 'heart_size'},
                           position_regions={'right_pleural': [1], 'left_pleural': [2], 'heart_size': [3]}))


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    return G.add_synthetic_anatomy(T.make_synthetic_corpus(tmp_path_factory.mktemp('gk'), n=24, size=32))


def test_anatomy_warp_matches_image_warp():
    "A square that is region 3 in the map and bright in the image ends up in the same place after crop+flip."
    g = torch.Generator().manual_seed(1)
    img = torch.zeros(12, 40, 40, dtype=torch.uint8); anat = torch.zeros(12, 40, 40, dtype=torch.uint8)
    for b in range(12):
        y, x = torch.randint(0, 28, (2,), generator=g).tolist()
        img[b, y:y + 12, x:x + 12] = 255; anat[b, y:y + 12, x:x + 12] = 3
    anat[:, :4, :20] = 1; anat[:, :4, 20:] = 2   # a sided strip, to check the id swap
    lab = torch.full((12, 51, 75), -1, dtype=torch.int8)
    x, _, (theta, flipped) = T.augment(img, lab, 40, 0.0, 1.0, crop_scale=(0.4, 1.0), jitter=0, generator=g, return_geometry=True)
    w = G.warp_anatomy(anat, theta, flipped, 40, TABLE)
    assert 0 < flipped.sum() < 12
    for b in range(12):
        a, i = w[b] == 3, x[b, 0] > 0.5
        assert (a == i).float().mean() > 0.97
    out = G.warp_anatomy(anat[:2], torch.stack([torch.tensor([[-1., 0, 0], [0, 1, 0]]), torch.tensor([[1., 0, 0], [0, 1, 0]])]),
                         torch.tensor([True, False]), 40, TABLE)
    assert (out[1] == anat[1].long()).all()                       # identity: unchanged
    assert (out[0, :4, :20] == 1).all() and (out[0, :4, 20:] == 2).all()   # mirrored, and ids swapped: the patient's right is again id 1


def _batch(corpus, model):
    tr = T.SplitData(corpus/'store', T.read_triplets(corpus/'triplets.jsonl'), 'train')
    kn = T.load_knowledge(corpus/'knowledge')
    which = np.arange(6)
    x, m = tr.batch(which)
    m[:3, POSITION_INDEX['left_pleural'], ENTITY_INDEX['pneumothorax']] = 1
    xa, ma, (th, fl) = T.augment(x, m, 32, 0.4, 0.2, generator=torch.Generator().manual_seed(0), return_geometry=True)
    out = model(xa, kn['entity_emb'])
    return dict(images=xa, labels=ma, rows=torch.from_numpy(tr.rows[which]), theta=th, flipped=fl, store=tr.store, entity_emb=kn['entity_emb']), out


@pytest.mark.parametrize('fn', [G.region_alignment_loss, G.region_attention_loss])
def test_losses_finite_with_trunk_gradient(corpus, fn):
    torch.manual_seed(0)
    model = MedKLIP(MedKLIPConfig(backbone='tiny', image_size=32, stride=8, d_model=32, layers=1, heads=2, ffn=64, dropout=0.0, text_dim=32))
    batch, out = _batch(corpus, model)
    name, loss = fn(batch, out, model)
    assert name.startswith('gkmvlp') and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    g = model.backbone.embedder.embedder.convolution.weight.grad
    assert g is not None and g.abs().sum() > 0


def test_no_anatomy_is_a_clear_error(tmp_path):
    c = T.make_synthetic_corpus(tmp_path, n=12, size=32)
    with pytest.raises(MedklipError, match='--anatomy'):
        T.pretrain(c/'store', c/'triplets.jsonl', c/'knowledge', tmp_path/'m', {**TINY, 'gkmvlp_weight': 1.0}, log=lambda *a: None)


def test_option_off_leaves_training_unchanged_and_on_changes_it(corpus, tmp_path):
    "Weight 0 trains exactly the same weights as no option; a positive weight trains different ones; both names resolve lazily."
    run = lambda out, aux: T.pretrain(corpus/'store', corpus/'triplets.jsonl', corpus/'knowledge', tmp_path/out,
                                      {**TINY, **aux}, log=lambda *a: None)
    run('off', {}); run('zero', {'gkmvlp_weight': 0.0, 'gkmvlp_attn_weight': 0.0}); run('on', {'gkmvlp_weight': 1.0, 'gkmvlp_attn_weight': 1.0})
    w = {k: T.load_checkpoint(tmp_path/k)[0].state_dict() for k in ('off', 'zero', 'on')}
    assert all(torch.equal(w['off'][k], w['zero'][k]) for k in w['off'])
    assert any(not torch.equal(w['off'][k], w['on'][k]) for k in w['off'])
