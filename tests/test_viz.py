"Heatmap overlay, inspector logic, checkpoint predictor and the papermill figure runner."
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medklip.core import MedklipError
from medklip.viz.overlay import overlay_heatmap, to_png, mask_outline
from medklip.viz.inspector import demo_predictor, inspector, model_predictor, hashed_embedding, predictor_from_checkpoint
from medklip.viz import figures

REPO = Path(__file__).resolve().parents[1]


def test_overlay_threshold_and_gt():
    img = np.linspace(0, 1, 40 * 50, dtype=np.float32).reshape(40, 50)
    hm = np.zeros((4, 5), np.float32); hm[0, 0] = 1
    o = overlay_heatmap(img, hm, opacity=1.0, threshold=0.99)
    assert o.shape == (40, 50, 3)
    assert (o[39, 49] == (img[39, 49] * 255 + .5).astype(np.uint8)).all()   # below threshold: untouched
    m = np.zeros((40, 50), bool); m[10:20, 10:20] = True
    g = overlay_heatmap(img, hm, opacity=0.0, mask=m, gt_color=(255, 0, 255))
    assert (g[mask_outline(m)] == (255, 0, 255)).all() and not (g[15, 15] == (255, 0, 255)).all()
    assert to_png(o)[:8] == b'\x89PNG\r\n\x1a\n'
    with pytest.raises(MedklipError): overlay_heatmap(img, hm, mask=np.zeros((3, 3), bool))


def test_inspector_caches_and_rerenders():
    calls = []
    def pred(image, queries):
        calls.append(list(queries)); return demo_predictor()(image, queries)
    w = inspector(predict=pred, selected=('effusion',))
    assert calls == [['effusion']] and len(w.panels.children) == 1
    png = w._panels['effusion'][0].value
    w.threshold.value = 0.6
    assert len(calls) == 1 and w._panels['effusion'][0].value != png
    w.entity_select.value = ('effusion', 'pneumothorax')
    assert calls[-1] == ['pneumothorax'] and len(w.panels.children) == 2
    w.text.value = 'air under the diaphragm'
    assert calls[-1] == ['air under the diaphragm'] and 'existence score' in w.panels.children[2].children[0].value


def test_scores_do_not_depend_on_selection():
    p = demo_predictor(); img = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    a = p(img, ['effusion'])[0]; b = p(img, ['pneumothorax', 'effusion'])[1]
    assert a[0] == pytest.approx(b[0], abs=1e-6) and np.allclose(a[1], b[1], atol=1e-6)
    # free texts are appended one at a time: adding another text changes neither an entity nor the first text
    t = p(img, ['free air under the diaphragm'])[0]
    c = p(img, ['effusion', 'free air under the diaphragm', 'bilateral hazy opacities'])
    assert c[0][0] == pytest.approx(a[0], abs=1e-6) and c[1][0] == pytest.approx(t[0], abs=1e-6)
    assert np.allclose(c[1][1], t[1], atol=1e-6)


def test_predictor_from_checkpoint(tmp_path):
    torch = pytest.importorskip('torch')
    train = pytest.importorskip('medklip.train')
    from medklip.model import MedKLIP, MedKLIPConfig
    from medklip.vocab import ENTITIES, POSITIONS, vocab_hash
    cfg = MedKLIPConfig(backbone='tiny', image_size=64, d_model=32, layers=1, heads=2, ffn=64, dropout=0.0, text_dim=32)
    model = MedKLIP(cfg)
    meta = dict(config=cfg.to_dict(), entities=list(ENTITIES), positions=list(POSITIONS), vocab_hash=vocab_hash(), kb_hash='x',
                text_model='', entity_emb=torch.from_numpy(hashed_embedding(ENTITIES)), position_emb=torch.zeros(len(POSITIONS), 32),
                extra_names=[], extra_emb=torch.zeros(0, 32), image_size=64, mean=0.5, std=0.25)
    train.save_final(tmp_path/'model', model, meta)
    pred = predictor_from_checkpoint(tmp_path/'model')
    img = np.random.default_rng(0).random((50, 70)).astype(np.float32)
    (s, hm), = pred(img, ['effusion'])
    assert 0 <= s <= 1 and hm.shape == (50, 70)
    ref = model_predictor(model.eval(), dict(meta, entity_emb=meta['entity_emb'].numpy()))(img, ['effusion'])[0]
    assert s == pytest.approx(ref[0], abs=1e-5)
    with pytest.raises(MedklipError, match='checkpoint not found'): predictor_from_checkpoint(tmp_path/'nope')


def _fake_outputs(d: Path):
    d.mkdir(parents=True, exist_ok=True)
    st = lambda v: dict(value=v, ci=[v - .02, v + .02])
    at = {m: st(.6) for m in ('f1', 'accuracy', 'mcc', 'sensitivity', 'specificity', 'precision')}
    cls = dict(n=60, n_pos=20, auroc=st(.8), at_val_threshold=at, at_oracle_threshold=at)
    rep = dict(dataset='rsna', split='test', n_test=60, prompts=dict(description=dict(
        n_images=60, classes=dict(pneumonia=cls), macro=dict(auroc=dict(value=.8, ci=[.78, .82], n_classes=1), at_val_threshold=at, at_oracle_threshold=at))))
    (d/'zeroshot_rsna.json').write_text(json.dumps(rep))
    (d/'grounding_rsna.json').write_text(json.dumps(dict(dataset='rsna', thresholds=dict(raw=0.008, normalised=0.5),
        overall=dict(n=3, pointing_game=.67, raw_recall=.5, raw_precision=.4, raw_iou=.3, raw_dice=.4), classes={})))
    rng = np.random.default_rng(0); y = rng.integers(0, 2, 60)
    pd.DataFrame({'image_id': range(60), 'label:pneumonia': y, 'score:pneumonia:description': y * .4 + rng.random(60)}).to_csv(d/'zeroshot_rsna_scores.csv', index=False)
    live = d/'live'/'plots'/'metrics'/'train'; live.mkdir(parents=True)
    (live/'loss.tsv').write_text('timestamp\tstep\tloss\n1\t0\t3.0\n2\t1\t2.0\n3\t2\t1.7\n')
    (d/'triplets.jsonl').write_text(json.dumps(dict(study_id='1', triplets=[dict(entity='effusion', position='left_pleural', exist=1)])) + '\n')


def test_run_figures_writes_reports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fake_outputs(tmp_path/'m')
    params = dict(metrics_dir='m', scores_csv='m/*scores*.csv', live_dir='m/live', triplets='m/triplets.jsonl', unused=1)
    done = figures.run_figures(params, 'reports', REPO/'nbs'/'figures', only=['result_tables', 'curves'])
    assert [p.name for p in done] == ['curves.ipynb', 'result_tables.ipynb']
    r = tmp_path/'reports'
    for f in ('table_zeroshot_vs_paper.html', 'table_grounding_vs_paper.csv', 'curves_zeroshot_rsna_scores.png',
              'training_curves.png', 'label_stats.html', 'curves.html', 'result_tables.html'):
        assert (r/f).stat().st_size > 0, f
    cmp = pd.read_csv(r/'table_zeroshot_vs_paper.csv')
    assert cmp.loc[cmp.metric == 'auroc', 'paper'].item() == 0.8694 and cmp.loc[cmp.metric == 'auroc', 'ours'].item() == 0.8


def test_failing_figure_notebook_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path); (tmp_path/'empty').mkdir()
    with pytest.raises(MedklipError, match='curves.ipynb failed'):
        figures.run_figures(dict(scores_csv='empty/*.csv'), 'reports', REPO/'nbs'/'figures', only=['curves'], html=False)
    assert (tmp_path/'reports'/'curves.ipynb').exists()   # the executed copy shows the error


def test_figure_notebooks_are_skipped_by_nbdev_and_have_parameters():
    for nb in sorted((REPO/'nbs'/'figures').glob('*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        assert cells[0]['cell_type'] == 'raw' and 'skip_exec: true' in ''.join(cells[0]['source']), nb
        assert 'out_dir' in figures.notebook_parameters(nb), nb


def test_inspector_shared_scale_and_threshold_dimming():
    "Same attention for two queries with different scores: under 'score' their rendered maxima differ; 'panel' stretches both."
    from medklip.viz.overlay import resize_map
    hm = np.zeros((8, 8), np.float32); hm[3:5, 3:5] = 0.04
    scores = {'effusion': 0.95, 'pneumothorax': 0.01}
    stub = lambda image, qs: [(scores.get(q, .5), resize_map(hm, image.shape)) for q in qs]
    w = inspector(predict=stub, selected=('effusion', 'pneumothorax'), scale='score', thresholds={'effusion': .6})
    peak = {q: float(m.max()) for q, m in w.rendered.items()}
    assert peak['effusion'] == pytest.approx(1.0) and peak['pneumothorax'] == pytest.approx(0.01 / 0.95, rel=1e-3)
    assert 'medklip-below' in w._panels['pneumothorax'][2]._dom_classes and 'absent' in w._panels['pneumothorax'][1].value
    w.scale.value = 'panel'
    assert all(float(m.max()) == pytest.approx(1.0) for m in w.rendered.values())
    w.clear()
    assert 'choose an entity' in w.hint.value and not w.panels.children


def test_inspector_asks_by_aspects_and_all_prompts():
    from medklip.viz.inspector import tag_prompt, split_prompt
    assert tag_prompt('effusion', 'all') == ['effusion [name]', 'effusion', 'effusion [aspects]'] and tag_prompt('x [name]', 'all') == ['x [name]']
    assert split_prompt('free air [aspects]') == ('free air', 'aspects') and split_prompt('effusion') == ('effusion', None)
    p = demo_predictor(); img = np.random.default_rng(2).random((64, 64)).astype(np.float32)
    (sa, ma), (sd, md) = p(img, ['pneumoperitoneum [aspects]', 'pneumoperitoneum'])
    assert sa != sd and ma.shape == md.shape == img.shape
    w = inspector(predict=p, selected=('effusion',), prompt='all')
    assert w.queries == ['effusion [name]', 'effusion', 'effusion [aspects]'] and len(w.panels.children) == 3
    assert p(img, ['effusion [name]'])[0][0] == pytest.approx(p(img, ['effusion'])[0][0], abs=1e-6)   # entities: name = stored query
    import json, tempfile, pathlib
    f = pathlib.Path(tempfile.mkdtemp())/'z.json'
    f.write_text(json.dumps(dict(prompts={pr: dict(classes={'effusion': dict(val_threshold=dict(value=v))}) for pr, v in
                                          (('name', .1), ('description', .2), ('aspects', .3))})))
    from medklip.viz.inspector import validation_thresholds
    assert validation_thresholds(f, None, 'all')[0] == {'effusion [name]': .1, 'effusion': .2, 'effusion [aspects]': .3}
