"Fine-tuning: patient-level fractions, trunk initialisation, segmentation learning, metrics JSON."
import json

import numpy as np
import pytest
import torch

from medklip.core import MedklipError
from medklip.finetune import finetune, finetune_cli, load_trunk, make_finetune_corpus, sample_patients
from medklip.model import MedKLIP, MedKLIPConfig
from medklip.train import save_final
from medklip.vocab import ENTITIES, POSITIONS, vocab_hash

FAST = dict(backbone='tiny', image_size=32, batch_size=8, n_boot=20)
quiet = lambda *a: None


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    return make_finetune_corpus(tmp_path_factory.mktemp('ft')/'store', n_patients=24, size=32)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp('ck')
    torch.manual_seed(3)
    cfg = MedKLIPConfig(backbone='tiny', image_size=32, d_model=16, layers=1, heads=2, ffn=32, text_dim=8)
    model = MedKLIP(cfg)
    with torch.no_grad():
        for p in model.backbone.parameters(): p.add_(torch.randn_like(p))   # distinguishable from any fresh init
    meta = dict(config=cfg.to_dict(), entities=list(ENTITIES), positions=list(POSITIONS), vocab_hash=vocab_hash(), kb_hash='x',
                text_model='random', entity_emb=torch.randn(75, 8), position_emb=torch.randn(51, 8), extra_names=[],
                extra_emb=torch.zeros(0, 8), image_size=32, mean=0.5, std=0.25, store=None)
    save_final(out, model, meta)
    return out, {k: v.clone() for k, v in model.backbone.state_dict().items()}


def test_fraction_patient_level_and_deterministic():
    pid = np.array([f'p{i // 3}' for i in range(600)])
    a = sample_patients(pid, 0.01, 7)
    assert a.sum() == 6 and len(set(pid[a])) == 2
    assert (a == sample_patients(pid, 0.01, 7)).all()
    assert (a <= sample_patients(pid, 0.1, 7)).all()      # nested
    assert sample_patients(pid, 1.0, 7).all()
    with pytest.raises(MedklipError): sample_patients(pid, 0, 0)


def test_trunk_copied_from_checkpoint(checkpoint):
    path, want = checkpoint
    trunk, info = load_trunk('pretrained', path)
    got = trunk.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert info['backbone'] == 'tiny' and info['image_size'] == 32
    fresh, _ = load_trunk('scratch', backbone='tiny')
    assert not torch.equal(fresh.state_dict()['embedder.embedder.convolution.weight'], want['embedder.embedder.convolution.weight'])
    # the scratch baseline beside a checkpoint: same architecture and image size, fresh weights
    like, linfo = load_trunk('scratch', path)
    assert {k: v.shape for k, v in like.state_dict().items()} == {k: v.shape for k, v in want.items()}
    assert linfo['backbone'] == 'tiny' and linfo['image_size'] == 32
    assert not torch.equal(like.state_dict()['embedder.embedder.convolution.weight'], want['embedder.embedder.convolution.weight'])


def test_imagenet_offline_error():
    with pytest.raises(MedklipError, match='pretrained'): load_trunk('imagenet', hub_id='no-such-org/no-such-resnet')


def test_segmentation_dice_improves(corpus, tmp_path):
    store, masks = corpus
    s = dict(FAST, lr=3e-3)
    before = finetune(store, 'segment', 'scratch', tmp_path/'a', masks=masks, settings=dict(s, epochs=0), log=quiet)
    after = finetune(store, 'segment', 'scratch', tmp_path/'b', masks=masks, settings=dict(s, epochs=5), log=quiet)
    d0, d1 = before['metrics']['dice_positive']['value'], after['metrics']['dice_positive']['value']
    assert d1 > d0 + 0.2 and d1 > 0.5, (d0, d1)


def test_classify_from_checkpoint_metrics_json(corpus, checkpoint, tmp_path):
    store, _ = corpus
    r = finetune(store, 'classify', 'pretrained', tmp_path/'o', checkpoint=checkpoint[0], fraction=0.5, seed=1,
                 settings=dict(FAST, epochs=2), log=quiet)
    m = json.loads((tmp_path/'o'/'metrics.json').read_text())
    assert m['init']['init'] == 'pretrained' and m['fraction'] == 0.5 and m['n_train_patients'] == 6
    c = m['metrics']['classes']['Effusion']
    assert set(c['auroc']) == {'value', 'ci'} and c['val_threshold']['value'] is not None
    assert set(m['metrics']['macro']['at_val_threshold']) >= {'f1', 'accuracy'}
    assert (tmp_path/'o'/'model.safetensors').exists() and m['classes'] == ['Effusion']


def test_grade_and_cli(corpus, tmp_path):
    store, masks = corpus
    import pandas as pd
    idx = pd.read_csv(store/'index.csv')
    area = masks.reshape(len(masks), -1).mean(1)
    pd.DataFrame(dict(image_id=idx['image_id'], score=area * 100)).to_csv(tmp_path/'sev.csv', index=False)
    (tmp_path/'p.yaml').write_text("finetune:\n  epochs: 1\n  backbone: tiny\n  image_size: 32\n  n_boot: 10\n")
    rc = finetune_cli(['--store', str(store), '--task', 'grade', '--init', 'scratch', '--out', str(tmp_path/'g'),
                       '--params', str(tmp_path/'p.yaml'), '--set', f'grade_column={tmp_path}/sev.csv:score', '--set', 'grade_bins=[0.01, 5, 10]'])
    assert rc == 0
    m = json.loads((tmp_path/'g'/'metrics.json').read_text())
    assert m['classes'][0] == 'grade_0' and len(m['classes']) >= 3 and m['metrics']['macro']['auroc'] is not None
    with pytest.raises(MedklipError, match='grade_column'):
        finetune(store, 'grade', 'scratch', tmp_path/'x', settings=FAST, log=quiet)
