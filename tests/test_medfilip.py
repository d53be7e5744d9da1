"MedFILIP soft-target auxiliary loss (medklip.methods.medfilip)."
from __future__ import annotations
import os
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
import pytest
import torch

from medklip.core import MedklipError
from medklip.vocab import ENTITIES, POSITIONS, ENTITY_INDEX as E, POSITION_INDEX as P
from medklip.methods.medfilip import (FindingBank, MedFILIPLoss, finding_category, finding_text, image_text_logits,
                                      medfilip_objective, register_medfilip, soft_targets)
from medklip.losses import AUX_LOSSES
from medklip.train import make_synthetic_corpus, pretrain
from medklip.text.embed import (KnowledgeEmbeddings, embed_texts, load_knowledge_embeddings, make_tiny_text_model,
                                save_knowledge_embeddings)

TINY = dict(backbone='tiny', image_size=48, d_model=32, layers=1, heads=2, ffn=64, batch_size=6, epochs=1, lr=1e-3,
            warmup_steps=2, workers=0, val_batch_size=16, threads=1)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    "Synthetic corpus whose knowledge embeddings come from a tiny random BERT (so it can embed finding texts)."
    root = make_synthetic_corpus(tmp_path_factory.mktemp('medfilip'), n=24, size=48)
    tiny = make_tiny_text_model(root/'tiny_bert', hidden=32)
    k = load_knowledge_embeddings(root/'knowledge')
    save_knowledge_embeddings(KnowledgeEmbeddings(k.entity_names, k.entity_emb, k.position_names, k.position_emb, k.extra_names,
                                                  k.extra_emb, str(tiny), 'mean', k.kb_hash, k.vocab_hash), root/'knowledge')
    return root


@pytest.fixture(autouse=True)
def default_registration():
    yield
    register_medfilip()   # each test leaves the import-time registration behind


class Counting:
    "Tiny-BERT encoder that counts the texts it embeds."
    def __init__(self, path): self.path, self.calls, self.texts = path, 0, 0
    def __call__(self, texts):
        self.calls += 1; self.texts += len(texts)
        return embed_texts(texts, str(self.path), pooling='mean', cache_dir=False)


# a mix of findings: two fluid (effusion left/right, edema), one lucency, one opacity
PAIRS = [(E['effusion'], P['left_pleural']), (E['effusion'], P['right_pleural']), (E['edema'], P['pulmonary']),
         (E['pneumothorax'], P['left_apical_lung']), (E['consolidation'], P['lower_right_lobe'])]


def test_finding_text_and_category():
    t = finding_text('pneumothorax', 'left_apical_lung')
    assert t.startswith('Pneumothorax in the apex of the left lung. An air-like finding')
    assert finding_text('effusion', 'right_pleural', severity='small').startswith('Small pleural effusion in the right pleural space.')
    assert finding_category('edema') == finding_category('effusion') == 'fluid'
    with pytest.raises(MedklipError, match='unknown position'): finding_text('effusion', 'knee')


def test_similarity_and_soft_targets(corpus):
    bank = FindingBank(Counting(corpus/'tiny_bert'))
    rows = bank.add(PAIRS)
    S = bank.similarity(rows)
    cat = bank.category[rows]
    assert torch.equal(S, S.T)
    assert S.min() >= 0 and S.max() <= 1
    assert torch.equal(S.diag(), torch.ones(len(PAIRS)))
    across = cat[:, None] != cat[None, :]
    assert across.any() and (S[across] == 0).all()
    same = (cat[:, None] == cat[None, :]) & ~torch.eye(len(PAIRS), dtype=torch.bool)
    assert same.any() and (S[same] > 0).all()          # fluid findings share similarity
    own = torch.zeros(3, len(PAIRS), dtype=torch.bool)
    own[0, [0, 3]] = True; own[1, 4] = True           # image 2 has no findings
    T = soft_targets(own, S)
    assert T.shape == (3, len(PAIRS)) and T.min() >= 0 and T.max() <= 1
    assert (T[own] == 1).all()                         # 1 on own findings
    assert T[0, 1] == S[0, 1] and T[0, 2] == S[0, 2]   # same-category neighbours of the left effusion
    assert T[1, :4].eq(0).all()                        # opacity image: 0 for fluid and lucency findings
    assert T[2].eq(0).all()


def _batch_out(m, requires_grad=True, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(m.shape[0], len(ENTITIES), d, generator=g, requires_grad=requires_grad)
    return dict(labels=m), dict(position=pos, logits=torch.zeros(m.shape[0], len(ENTITIES), 2))


def _matrices(b=4):
    m = torch.full((b, len(POSITIONS), len(ENTITIES)), -1, dtype=torch.int8)
    for i, (e, p) in enumerate(PAIRS[:b]): m[i, p, e] = 1
    m[0, P['right_pleural'], E['effusion']] = 1
    m[-1, P['unspecified'], E['pneumothorax']] = 0      # absent findings are not finding texts
    return m


def test_loss_finite_with_gradients_and_cached(corpus):
    enc = Counting(corpus/'tiny_bert')
    loss = MedFILIPLoss(embed_fn=enc)
    batch, out = _batch_out(_matrices())
    name, l = loss(batch, out, None)
    assert name == 'medfilip' and l.ndim == 0 and torch.isfinite(l) and l > 0
    l.backward()
    g = out['position'].grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    used = {e for e, _ in PAIRS[:4]}
    assert g[:, [e for e in range(len(ENTITIES)) if e not in used]].abs().sum() == 0   # only the findings' entity queries learn
    assert (enc.calls, enc.texts) == (1, 4)
    for seed in (1, 2): loss(*_batch_out(_matrices(), seed=seed))
    assert (enc.calls, enc.texts) == (1, 4)            # later steps reuse the cached embeddings
    loss(*_batch_out(_matrices(5)))
    assert (enc.calls, enc.texts) == (2, 5)            # only the new pair is embedded


def test_fit_precomputes_all_pairs(corpus):
    enc = Counting(corpus/'tiny_bert')
    loss = MedFILIPLoss(embed_fn=enc)
    loss.get_bank().fit(_matrices(5))
    assert (enc.calls, enc.texts, len(loss.bank)) == (1, 5, 5)
    loss(*_batch_out(_matrices(5)))
    assert enc.calls == 1


def test_loss_learns_its_targets():
    "A few gradient steps on the position vectors lower the loss (the targets are reachable)."
    loss = MedFILIPLoss(embed_fn=lambda t: torch.randn(len(t), 16, generator=torch.Generator().manual_seed(len(t))))
    batch, out = _batch_out(_matrices(), d=16)
    pos = out['position']
    opt = torch.optim.SGD([pos], lr=5.0)
    first = None
    for _ in range(30):
        l = loss(batch, dict(position=pos), None)[1]
        first = first if first is not None else l.item()
        opt.zero_grad(); l.backward(); opt.step()
    assert l.item() < 0.5 * first


def test_empty_batch_and_errors(corpus):
    loss = MedFILIPLoss(embed_fn=lambda t: torch.ones(len(t), 8))
    m = torch.full((2, len(POSITIONS), len(ENTITIES)), -1, dtype=torch.int8)
    batch, out = _batch_out(m)
    name, l = loss(batch, out, None)
    assert l.item() == 0 and l.requires_grad          # nothing present: zero, still part of the graph
    with pytest.raises(MedklipError, match='text_dim'): loss(*_batch_out(_matrices()))   # 8-d texts vs 32-d model
    with pytest.raises(MedklipError, match='no text encoder'): MedFILIPLoss()(*_batch_out(_matrices()))
    with pytest.raises(MedklipError, match='entity queries'):
        loss(dict(labels=_matrices()), dict(position=torch.randn(4, 3, 8)), None)
    with pytest.raises(MedklipError, match='meta.json'): MedFILIPLoss.from_knowledge(corpus/'nowhere')


def test_encoder_from_batch(corpus):
    "Without a configured encoder the loss takes the batch's text_model/pooling (the training loop can pass them)."
    loss = MedFILIPLoss(cache_dir=False)
    m = _matrices()
    batch, out = _batch_out(m)
    batch.update(text_model=str(corpus/'tiny_bert'), pooling='mean')
    _, l = loss(batch, out, None)
    ref = MedFILIPLoss.from_knowledge(corpus/'knowledge', cache_dir=False)(dict(labels=m), dict(position=out['position']), None)[1]
    assert torch.allclose(l, ref)


def _train(corpus, out, aux):
    return pretrain(corpus/'store', corpus/'triplets.jsonl', corpus/'knowledge', out, {**TINY, 'medfilip_weight': aux.get('medfilip', 0.0)}, log=lambda *a: None)


def _weights(out):
    from safetensors.torch import load_file
    return load_file(str(Path(out)/'model.safetensors'))


def test_option_off_is_unchanged_and_on_trains(corpus, tmp_path):
    register_medfilip(corpus/'knowledge', cache_dir=False)
    _train(corpus, tmp_path/'off', {})
    _train(corpus, tmp_path/'zero', {'medfilip': 0.0})
    _train(corpus, tmp_path/'on', {'medfilip': 1.0})
    off, zero, on = (_weights(tmp_path/k) for k in ('off', 'zero', 'on'))
    assert all(torch.equal(off[k], zero[k]) for k in off)          # weight 0: bit-identical training
    assert any(not torch.equal(off[k], on[k]) for k in off)         # weight 1: the loss reaches the model
    assert not (tmp_path/'off'/'dvclive'/'plots'/'metrics'/'train'/'aux_medfilip.tsv').exists()


def test_pretrain_logs_aux_medfilip(corpus, tmp_path):
    loss = register_medfilip(corpus/'knowledge', cache_dir=False)
    assert AUX_LOSSES['medfilip'] is loss
    seen = []
    s = pretrain(corpus/'store', corpus/'triplets.jsonl', corpus/'knowledge', tmp_path, {**TINY, 'medfilip_weight': 1.0, 'log_every': 1},
                 callbacks=[seen.append], log=lambda *a: None)
    assert s['steps'] == 3 and all(torch.isfinite(torch.tensor(x['aux_medfilip'])) for x in seen)
    tsv = tmp_path/'dvclive'/'plots'/'metrics'/'train'/'aux_medfilip.tsv'
    assert tsv.exists()
    rows = tsv.read_text().strip().splitlines()
    assert rows[0].split('\t')[-1] == 'aux_medfilip' and len(rows) == 4
    assert loss.bank.n_embedded == len(loss.bank) == 2     # effusion left and right, each embedded once


def test_labelled_queries_with_medfilip(corpus, tmp_path):
    "pretrain.queries=labelled composes with MedFILIP: its loss sees the 75-entity layout (queries that did not run are zeros) and trains."
    register_medfilip(corpus/'knowledge', cache_dir=False)
    seen = []
    pretrain(corpus/'store', corpus/'triplets.jsonl', corpus/'knowledge', tmp_path, {**TINY, 'medfilip_weight': 1.0, 'queries': 'labelled'},
             callbacks=[seen.append], log=lambda *a: None)
    assert len(seen) == 3 and all(torch.isfinite(torch.tensor(x['aux_medfilip'])) and x['aux_medfilip'] > 0 for x in seen)


def test_module_function_name_resolves():
    from medklip.losses import resolve_aux_losses
    import medklip.methods.medfilip as mf
    fn, w = resolve_aux_losses({'medklip.methods.medfilip:medfilip_loss': 2})[0]
    assert fn is mf.medfilip_loss and w == 2.0
