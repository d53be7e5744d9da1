"Pretraining: a step learns, resume equals an uninterrupted run, NaN stops safely, checkpoints are weights_only and carry meta."
import json
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import medklip.train as T
from medklip.core import InputError, MedklipError
from medklip.model import MedKLIP, MedKLIPConfig
from medklip.vocab import ENTITIES, ENTITY_INDEX, POSITIONS, vocab_hash

TINY = dict(backbone='tiny', image_size=48, d_model=32, layers=1, heads=2, ffn=64, batch_size=6, epochs=2, lr=1e-3,
            warmup_steps=2, workers=0, val_batch_size=16)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    return T.make_synthetic_corpus(tmp_path_factory.mktemp('corpus'), n=24, size=48)


def _run(corpus, out, **kw):
    settings = {**TINY, **kw.pop('settings', {})}
    kw.setdefault('log', lambda *a: None)
    return T.pretrain(corpus/'store', corpus/'triplets.jsonl', corpus/'knowledge', out, settings, **kw)


def test_training_steps_reduce_loss(corpus):
    torch.manual_seed(0)
    data = T.SplitData(corpus/'store', T.read_triplets(corpus/'triplets.jsonl'))
    kn = T.load_knowledge(corpus/'knowledge')
    model = MedKLIP(MedKLIPConfig(backbone='tiny', image_size=48, d_model=32, layers=1, heads=2, ffn=64, dropout=0.0, text_dim=32))
    opt = torch.optim.AdamW(T.param_groups(model, 0.02), lr=1e-3)
    x, m = data.batch(np.arange(12))
    x = T.preprocess(x, 48, 0.3, 0.2)
    losses = []
    for _ in range(5):
        loss, _ = T.medklip_loss(model(x, kn['entity_emb']), m, kn['position_emb'], generator=torch.Generator().manual_seed(0))
        opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_weight_decay_groups():
    model = MedKLIP(MedKLIPConfig(**{k: TINY[k] for k in ('backbone', 'image_size', 'd_model', 'layers', 'heads', 'ffn')}, text_dim=8))
    decay, no = T.param_groups(model, 0.02)
    assert decay['weight_decay'] == 0.02 and no['weight_decay'] == 0
    assert all(p.ndim > 1 for p in decay['params']) and all(p.ndim <= 1 for p in no['params'])
    assert any(p is model.decoder.norm.weight for p in no['params']) and any(p is model.classifier.bias for p in no['params'])


def test_resume_mid_epoch_equals_uninterrupted(corpus, tmp_path):
    _run(corpus, tmp_path/'full')

    class Killed(Exception): pass
    def kill(info):
        if info['global_step'] == 5: raise Killed  # after the checkpoint of step 4, mid epoch 2
    with pytest.raises(Killed):
        _run(corpus, tmp_path/'cut', settings=dict(checkpoint_every_steps=2), callbacks=[kill])
    ck = torch.load(tmp_path/'cut'/'last.ckpt', weights_only=True)
    assert (ck['epoch'], ck['step_in_epoch'], ck['global_step']) == (1, 1, 4)
    seen = []
    s = _run(corpus, tmp_path/'cut', settings=dict(checkpoint_every_steps=2), resume=True, callbacks=[seen.append])
    assert [i['global_step'] for i in seen] == [5, 6] and s['steps'] == 6
    a, b = load_file(str(tmp_path/'full'/'model.safetensors')), load_file(str(tmp_path/'cut'/'model.safetensors'))
    assert a.keys() == b.keys()
    for k in a: torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    real, calls = T.medklip_loss, []
    def poisoned(*a, **k):
        loss, parts = real(*a, **k)
        calls.append(1)
        return (loss * float('nan') if len(calls) == 6 else loss), parts
    monkeypatch.setattr(T, 'medklip_loss', poisoned)
    # 9 steps an epoch; the loss is checked (one sync) at the checkpoints of steps 4 and 8 only: the error names the bad step
    with pytest.raises(MedklipError, match=r'loss is nan at global step 6 \(epoch 0 step 5; found at the check of global steps 5-8\).*last good checkpoint') as e:
        _run(corpus, tmp_path, settings=dict(batch_size=2, checkpoint_every_steps=4, log_every=100))
    assert '\n' not in str(e.value)
    ck = torch.load(tmp_path/'last.ckpt', weights_only=True)
    assert ck['global_step'] == 4
    assert all(torch.isfinite(v).all() for v in ck['model'].values() if v.is_floating_point())
    assert not (tmp_path/'model.safetensors').exists()


def test_checkpoint_weights_only_and_meta(corpus, tmp_path):
    s = _run(corpus, tmp_path, settings=dict(epochs=1))
    assert s['epochs_done'] == 1 and 0 <= s['val_auc'] <= 1
    ck = torch.load(tmp_path/'last.ckpt', weights_only=True)
    meta = ck['meta']
    assert meta['entities'] == ENTITIES and meta['positions'] == POSITIONS and meta['vocab_hash'] == vocab_hash()
    assert meta['text_model'] == 'random' and meta['kb_hash'] == 'synthetic' and meta['image_size'] == 48
    assert meta['pooling'] == 'cls' and json.loads((tmp_path/'meta.json').read_text())['pooling'] == 'cls'
    assert meta['entity_emb'].shape == (75, 32) and meta['position_emb'].shape == (51, 32)
    stats = json.loads((corpus/'store'/'meta.json').read_text())
    assert meta['mean'] == pytest.approx(stats['mean']) and meta['std'] == pytest.approx(stats['std'])
    for p in (tmp_path/'last.ckpt', tmp_path, tmp_path/'model.safetensors'):
        model, m = T.load_checkpoint(p)
        assert not model.training and m['config']['backbone'] == 'tiny' and torch.equal(m['entity_emb'], meta['entity_emb'])
        x = T.preprocess(torch.zeros(1, 60, 60, dtype=torch.uint8), m['image_size'], m['mean'], m['std'])
        assert model(x, m['entity_emb'])['logits'].shape == (1, 75, 2)
    assert (tmp_path/'dvclive').is_dir()


def test_bad_inputs_are_clear(corpus, tmp_path):
    with pytest.raises(MedklipError, match='unknown pretrain setting'):
        _run(corpus, tmp_path, settings=dict(epoch=3))
    with pytest.raises(MedklipError, match='fewer than one batch'):
        _run(corpus, tmp_path, settings=dict(batch_size=1000))
    bad = tmp_path/'t.jsonl'; bad.write_text('{"study_id": "s1"}\n')
    with pytest.raises(MedklipError, match='line 1'):
        T.read_triplets(bad)
    with pytest.raises(MedklipError, match='checkpoint not found'):
        T.load_checkpoint(tmp_path/'nothing.ckpt')


def test_triplet_errors_name_the_file_line(tmp_path):
    "A bad triplets line is named by its 1-based line in the file (blank lines counted), not a 0-based row."
    good = '{"study_id": "s1", "triplets": []}'
    bad = tmp_path/'t.jsonl'; bad.write_text(f'{good}\n\n{{"study_id": "s3"}}\n')
    with pytest.raises(InputError) as e: T.read_triplets(bad)
    assert e.value.line == 3 and str(e.value).startswith(f"{bad} line 3: not a triplets line") and 'row' not in str(e.value)
    bad.write_text(f'{good}\n{{"study_id": "s2", "triplets": [{{"entity": "no_such_entity", "exist": 1}}]}}\n')
    with pytest.raises(InputError, match=r'line 2: study s2: bad triplet'): T.read_triplets(bad)


def test_resume_with_other_settings_starts_a_fresh_run(corpus, tmp_path):
    "Resume continues only the same run: other settings (epochs, lr, model size, a method weight) train anew and say what differs."
    out, logs = tmp_path/'m', []
    _run(corpus, out)                                                       # 2 epochs, 6 steps, finished
    for change, expect in [(dict(epochs=1), 'epochs 2 → 1'), (dict(lr=5e-4), 'lr 0.001 → 0.0005'), (dict(d_model=64), 'd_model 32 → 64')]:
        logs.clear(); steps = []
        s = _run(corpus, out, settings=change, resume=True, callbacks=[steps.append], log=logs.append)
        assert any('starting a fresh run' in str(l) and expect in str(l) for l in logs), logs
        assert steps and steps[0]['global_step'] == 1 and s['reused'] is False
        ck = torch.load(out/'last.ckpt', weights_only=True)
        assert all(ck['settings'][k] == v for k, v in change.items())      # the checkpoint is the run the settings describe
        meta = json.loads((out/'meta.json').read_text())
        assert all(meta['settings'][k] == v for k, v in change.items()) and meta['trained']['epochs'] == ck['epoch']
        _run(corpus, out)                                                   # back to the reference run for the next case


def test_finished_identical_run_is_reused_and_runtime_settings_do_not_matter(corpus, tmp_path):
    out, logs, steps = tmp_path/'m', [], []
    _run(corpus, out)
    before = (out/'model.safetensors').read_bytes()
    s = _run(corpus, out, settings=dict(threads=1, val_batch_size=7), resume=True, callbacks=[steps.append], log=logs.append)
    assert steps == [] and s['reused'] and s['epochs_done'] == 2 and s['steps'] == 6
    assert any('reused, nothing trained' in str(l) for l in logs)
    assert (out/'model.safetensors').read_bytes() == before


def test_resume_on_a_truncated_checkpoint_is_a_clear_error(corpus, tmp_path):
    _run(corpus, tmp_path, settings=dict(max_steps=1))
    ck = tmp_path/'last.ckpt'; ck.write_bytes(ck.read_bytes()[:2000])
    with pytest.raises(MedklipError, match='not a readable medklip checkpoint.*delete it'):
        _run(corpus, tmp_path, resume=True)


def test_debris_of_a_killed_write_is_removed(corpus, tmp_path):
    (tmp_path/'.last.ckpt.abc123.tmp').write_bytes(b'half a checkpoint')
    logs = []
    _run(corpus, tmp_path, settings=dict(max_steps=1), log=logs.append)
    assert not list(tmp_path.glob('.*.tmp')) and any('temporary file' in str(l) for l in logs)


def test_dvclive_has_no_repeated_steps_after_resume(corpus, tmp_path):
    class Killed(Exception): pass
    def kill(info):
        if info['global_step'] == 5: raise Killed      # steps 1-5 logged, checkpoint at step 4
    with pytest.raises(Killed):
        _run(corpus, tmp_path, settings=dict(checkpoint_every_steps=2, log_every=1), callbacks=[kill])
    _run(corpus, tmp_path, settings=dict(checkpoint_every_steps=2, log_every=1), resume=True)
    rows = (tmp_path/'dvclive'/'plots'/'metrics'/'train'/'loss.tsv').read_text().splitlines()
    steps = [int(r.split('\t')[0]) for r in rows[1:]]
    assert steps == [1, 2, 3, 4, 5, 6]


def _logged(folder, name='loss'):
    rows = (folder/'dvclive'/'plots'/'metrics'/'train'/f'{name}.tsv').read_text().splitlines()[1:]
    return {int(r.split('\t')[0]): float(r.split('\t')[1]) for r in rows}


def test_log_every_logs_every_n_steps_and_each_epoch_end_and_resumes_exactly(corpus, tmp_path):
    "log_every=2 over 2 epochs of 3 steps: steps 2, 3 (epoch end), 4, 6; the values are those of a per-step log; a resumed run logs the same."
    every, seen = [], []
    _run(corpus, tmp_path/'all', settings=dict(log_every=1), callbacks=[every.append])
    s = _run(corpus, tmp_path/'two', settings=dict(log_every=2))
    full, two = _logged(tmp_path/'all'), _logged(tmp_path/'two')
    assert sorted(two) == [2, 3, 4, 6] and all(two[k] == pytest.approx(full[k], abs=1e-6) for k in two)
    assert s['loss'] == pytest.approx(every[-1]['loss'], abs=1e-6) and s['steps'] == 6  # the summary is the last step's, as before
    class Killed(Exception): pass
    def kill(info):
        if info['global_step'] == 5: raise Killed
    with pytest.raises(Killed):
        _run(corpus, tmp_path/'cut', settings=dict(log_every=2, checkpoint_every_steps=2), callbacks=[kill])
    r = _run(corpus, tmp_path/'cut', settings=dict(log_every=2, checkpoint_every_steps=2), resume=True)
    assert _logged(tmp_path/'cut') == pytest.approx(two, abs=1e-6) and r['loss'] == pytest.approx(s['loss'], abs=1e-6)
    assert (tmp_path/'two'/'model.safetensors').read_bytes() == (tmp_path/'all'/'model.safetensors').read_bytes()


def test_no_host_sync_between_log_points(corpus, tmp_path, monkeypatch):
    "9 steps an epoch (batch 2), log_every 4: the training loop reads tensors back to the host only after steps 4 and 8 (log points)."
    import sys
    reads, marks = [], []
    for name in ('item', 'tolist', '__float__', '__int__', '__bool__', 'numpy', 'cpu'):
        real = getattr(torch.Tensor, name)
        def counted(self, *a, _real=real, _name=name, **k):
            if sys._getframe(1).f_code.co_filename == T.__file__: reads.append(_name)   # read by train.py's own code
            return _real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    def marked(step, s, total, _real=T.lr_at):       # called once at the start of each step, after the batch is loaded
        marks.append(len(reads)); return _real(step, s, total)
    monkeypatch.setattr(T, 'lr_at', marked)
    _run(corpus, tmp_path, settings=dict(batch_size=2, epochs=1, log_every=4))
    per_step = [b - a for a, b in zip(marks, marks[1:])]    # reads during steps 1..8 (step 9 runs into validation)
    assert len(marks) == 9 and [i + 1 for i, n in enumerate(per_step) if n] == [4, 8], per_step


@pytest.mark.parametrize('key,value,msg', [('epochs', 2.5, 'whole number'), ('epochs', 0, '>= 1'), ('crop_scale', 0.9, 'pair'),
                                           ('batch_size', 0, '>= 1'), ('lr', -1, '> 0'), ('flip', 'false', 'true or false'),
                                           ('aux_losses', 'gkmvlp', 'replaced by scalar'), ('medfilip_weight', 'on', 'not a number')])
def test_bad_settings_are_one_line_errors(corpus, tmp_path, key, value, msg):
    with pytest.raises(MedklipError, match=msg) as e:
        _run(corpus, tmp_path, settings={key: value})
    assert f'pretrain.{key}=' in str(e.value) and '\n' not in str(e.value)
    assert not (tmp_path/'last.ckpt').exists()


def test_cuda_without_gpu_is_a_clear_error(corpus, tmp_path):
    if torch.cuda.is_available(): pytest.skip('a GPU is present')
    with pytest.raises(MedklipError, match="device='cuda': no CUDA GPU"):
        _run(corpus, tmp_path, settings=dict(device='cuda'))


def test_aux_loss_hook_logs_and_gets_gradient(corpus, tmp_path, monkeypatch):
    seen, grads = [], []
    def probe(batch, out, model):
        "A trivial aux loss pulling the 'effusion' existence logit up; its gradient must reach the classifier."
        seen.append((batch, model))
        return 'probe', -out['logits'][..., ENTITY_INDEX['effusion'], 1].mean()
    monkeypatch.setitem(T.AUX_LOSSES, 'probe', probe)
    real_loss, real_step = T.medklip_loss, torch.optim.AdamW.step
    monkeypatch.setattr(T, 'medklip_loss', lambda *a, **k: (real_loss(*a, **k)[0] * 0.0, {}))   # only the aux loss is left
    def step(self, *a, **k):
        g = seen[-1][1].classifier.bias.grad
        grads.append(None if g is None else g.clone())
        return real_step(self, *a, **k)
    monkeypatch.setattr(torch.optim.AdamW, 'step', step)
    info = []
    s = _run(corpus, tmp_path, settings=dict(epochs=1, log_every=1), aux_losses={'probe': 0.5}, callbacks=[info.append])
    assert s['steps'] == 3 and len(seen) == len(grads) == 3
    for g in grads: assert g is not None and torch.allclose(g, torch.tensor([0.0, -0.5]))   # d(-0.5·mean logit1)/d bias
    b = seen[0][0]
    data = T.SplitData(corpus/'store', T.read_triplets(corpus/'triplets.jsonl'))
    assert b['images'].shape == (6, 3, 48, 48) and b['labels'].shape == (6, 51, 75) and b['theta'].shape == (6, 2, 3)
    assert torch.equal(b['rows'], torch.from_numpy(data.rows[b['index'].numpy()]))      # rows reach per-image store data
    assert b['store'].index['image_id'][int(b['rows'][0])] == f"i{int(b['rows'][0])}"
    assert torch.equal(b['study'], torch.from_numpy(data.study_of[b['index'].numpy()]))
    logged = (tmp_path/'dvclive'/'plots'/'metrics'/'train'/'aux_probe.tsv').read_text().splitlines()
    assert logged[0].split('\t') == ['step', 'aux_probe'] and len(logged) == 4
    assert [round(float(l.split('\t')[1]), 4) for l in logged[1:]] == [round(i['aux_probe'], 4) for i in info]
    with pytest.raises(MedklipError, match='unknown aux loss'):
        _run(corpus, tmp_path/'c', aux_losses={'nope': 1.0})


def test_resume_after_input_change_trains_anew(corpus, tmp_path):
    "A finished run resumed on the same inputs does no more steps; on changed triplets it trains a new model."
    out, logs, same = tmp_path/'m', [], []
    _run(corpus, out)
    T.pretrain(corpus/'store', corpus/'triplets.jsonl', corpus/'knowledge', out, TINY, resume=True, log=logs.append, callbacks=[same.append])
    assert any('reused, nothing trained' in str(l) for l in logs) and same == []
    before = torch.load(out/'last.ckpt', weights_only=True)['global_step']
    # the same triplets with one study's labels flipped: a parser change upstream of this stage
    trip = tmp_path/'triplets.jsonl'
    lines = (corpus/'triplets.jsonl').read_text().splitlines()
    d = json.loads(lines[0]); d['triplets'] = [dict(t, exist=1 - t['exist']) if t['exist'] in (0, 1) else t for t in d['triplets']]
    trip.write_text('\n'.join([json.dumps(d)] + lines[1:]) + '\n')
    logs.clear(); steps = []
    T.pretrain(corpus/'store', trip, corpus/'knowledge', out, TINY, resume=True, log=logs.append, callbacks=[steps.append])
    assert any('inputs changed (triplets); starting a fresh run' in str(l) for l in logs)
    assert steps and steps[0]['global_step'] == 1 and len(steps) == before  # every step of the schedule ran again


def test_aspect_weight_trains_resumes_and_stores_aspects(corpus, tmp_path):
    "pretrain.aspect_weight > 0: the aspects loss is logged, the model stores the aspect queries, and a killed run resumes to the same weights."
    st = dict(aspect_weight=0.5)
    seen = []
    _run(corpus, tmp_path/'full', settings=st, callbacks=[seen.append])
    assert all('aux_aspects' in i and np.isfinite(i['aux_aspects']) for i in seen) and seen[0]['aux_aspects'] > 0
    meta = json.loads((tmp_path/'full'/'meta.json').read_text())
    assert meta['methods'] == {'aspects': 0.5} and meta['settings']['aspect_weight'] == 0.5 and len(meta['aspect_names']) > 10
    model, m2 = T.load_checkpoint(tmp_path/'full')
    assert m2['aspect_emb'].shape == (len(meta['aspect_names']), 32) and m2['entity_aspects'].shape == (75, len(meta['aspect_names']))

    class Killed(Exception): pass
    def kill(info):
        if info['global_step'] == 5: raise Killed
    with pytest.raises(Killed): _run(corpus, tmp_path/'cut', settings={**st, 'checkpoint_every_steps': 2}, callbacks=[kill])
    logs = []
    s = _run(corpus, tmp_path/'cut', settings={**st, 'checkpoint_every_steps': 2}, resume=True, log=logs.append)
    assert any('resumed' in str(l) for l in logs) and s['steps'] == 6
    a, b = load_file(str(tmp_path/'full'/'model.safetensors')), load_file(str(tmp_path/'cut'/'model.safetensors'))
    for k in a: torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    logs.clear()
    _run(corpus, tmp_path/'cut', settings={**st, 'aspect_weight': 1.0}, resume=True, log=logs.append)   # a method weight is result-defining
    assert any('starting a fresh run' in str(l) and 'aspect_weight 0.5 → 1.0' in str(l) for l in logs), logs


def test_aspect_weight_needs_aspects_and_old_knowledge_still_loads(tmp_path):
    old = T.make_synthetic_corpus(tmp_path/'old', n=24, size=48, aspects=False)
    kn = T.load_knowledge(old/'knowledge')
    assert kn['aspect_names'] == [] and kn['aspect_emb'].shape == (0, 32) and kn['entity_aspects'].shape == (75, 0)
    s = _run(old, tmp_path/'plain', settings=dict(epochs=1))                          # aspects off: trains as before
    assert 'aspect_names' not in json.loads((tmp_path/'plain'/'meta.json').read_text()) and s['steps'] == 3
    with pytest.raises(MedklipError, match='no aspects'): _run(old, tmp_path/'asp', settings=dict(epochs=1, aspect_weight=1.0))
    with pytest.raises(MedklipError, match='aspect_weight'): T.resolve_settings(dict(aspect_weight=-1))


def test_labelled_queries_train_only_labelled_entities_and_inference_uses_that_context(corpus, tmp_path):
    "pretrain.queries=labelled: only entities labelled in training run as decoder queries; inference keeps that context and appends the rest."
    import medklip
    from medklip.model import widen_queries, preprocess as prep
    seen = []
    _run(corpus, tmp_path/'m', settings=dict(queries='labelled', aspect_weight=0.5), callbacks=[seen.append])
    assert all(np.isfinite(i['loss']) for i in seen) and 'aux_aspects' in seen[0]
    meta = json.loads((tmp_path/'m'/'meta.json').read_text())
    assert meta['query_entities'] == ['effusion'] and meta['settings']['queries'] == 'labelled'
    model, m2 = T.load_checkpoint(tmp_path/'m')
    model.eval()
    data = T.SplitData(corpus/'store', T.read_triplets(corpus/'triplets.jsonl'), 'validate')
    u8 = data.batch(np.arange(len(data)))[0]
    x = prep(u8, m2['image_size'], m2['mean'], m2['std'])
    e, p = ENTITY_INDEX['effusion'], ENTITY_INDEX['pneumothorax']
    emb = m2['entity_emb']
    with torch.no_grad():
        alone = model(x, emb[[e]])['logits'].softmax(-1)[..., 1]                 # the context training used
        appended = model(x, emb[[e, p]])['logits'].softmax(-1)[..., 1]          # an entity outside it, appended alone
        wide = widen_queries(model(x, emb[[e]]), torch.tensor([e]), 75)
    assert wide['logits'].shape == (len(x), 75, 2) and torch.equal(wide['logits'][:, e], model(x, emb[[e]])['logits'][:, 0])
    assert wide['logits'][:, p].abs().sum() == 0
    got = medklip.load(tmp_path/'m').predict(list(u8.numpy()), ['effusion', 'pneumothorax'])
    np.testing.assert_allclose(got['effusion'].to_numpy(), alone[:, 0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got['pneumothorax'].to_numpy(), appended[:, 1].numpy(), rtol=1e-4, atol=1e-5)


def test_labelled_queries_need_a_label(tmp_path):
    c = T.make_synthetic_corpus(tmp_path/'c', n=24, size=48)
    (c/'triplets.jsonl').write_text(''.join(json.dumps(dict(study_id=f's{i}', triplets=[])) + '\n' for i in range(24)))
    with pytest.raises(MedklipError, match='queries=labelled: no entity is labelled'):
        _run(c, tmp_path/'m', settings=dict(queries='labelled'))
    assert T.query_index(np.full((2, 51, 75), -1, np.int8)) is None and T.query_index(np.zeros((2, 51, 75), np.int8), 'labelled') is None
