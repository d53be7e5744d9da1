"Figure notebooks executed end to end (papermill) on tiny fake pipeline outputs: result tables with fine-tuning and the unseen finding, curves, heatmap gallery."
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medklip.core import MedklipError
from medklip.viz import figures

REPO = Path(__file__).resolve().parents[1]


def _stat(v, w=.02): return dict(value=v, ci=[v - w, v + w])


def _zeroshot_report():
    at = {m: _stat(.6) for m in ('f1', 'accuracy', 'mcc', 'sensitivity', 'specificity', 'precision')}
    cls = lambda a: dict(n=60, n_pos=20, auroc=_stat(a, 0 if a == 1 else .02), at_val_threshold=at, at_oracle_threshold=at)
    macro = dict(auroc=dict(value=.8, ci=[.78, .82], n_classes=2), at_val_threshold=at, at_oracle_threshold=at)
    prompts = {p: dict(n_images=60, classes=dict(effusion=cls(1.0), pneumoperitoneum=cls(a)), macro=macro) for p, a in (('description', .66), ('name', .55))}
    return dict(dataset='demo', split='test', n_test=60, prompts=prompts,
                unseen=dict(pneumoperitoneum=dict(n=60, n_pos=20, name_auroc=.55, description_auroc=.66, difference=dict(value=.11, ci=[.01, .2]))))


def _finetune(d: Path, task, init, frac, v, w=.02):
    m = dict(dice=_stat(v, w)) if task == 'segment' else dict(macro=dict(auroc=_stat(v, w)))
    p = d/f'{task}_{init}_{frac}'; p.mkdir(parents=True)
    (p/'metrics.json').write_text(json.dumps(dict(task=task, init=dict(init=init, checkpoint='x'), fraction=frac, n_train_images=12,
                                                  n_test=6, dataset='demo', metrics=m)))


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path/'m').mkdir()
    (tmp_path/'m'/'zeroshot_demo.json').write_text(json.dumps(_zeroshot_report()))
    (tmp_path/'m'/'grounding_demo.json').write_text(json.dumps(dict(dataset='demo', thresholds=dict(raw=.008, normalised=.5),
        overall=dict(n=3, pointing_game=.67, raw_recall=.5, raw_precision=.4, raw_iou=.3, raw_dice=.4), classes={})))
    for i, v in (('pretrained', .9), ('scratch', .7)):
        _finetune(tmp_path/'ft', 'classify', i, .1, v - .1); _finetune(tmp_path/'ft', 'classify', i, 1.0, v)
    _finetune(tmp_path/'ft', 'segment', 'pretrained', 1.0, 1.0, w=0.0)   # saturated
    rng = np.random.default_rng(0); y = rng.integers(0, 2, 80)
    pd.DataFrame({'image_id': range(80), 'label:effusion': y, 'score:effusion:description': y * .5 + rng.random(80),
                  'score:effusion:name': y * .5 + rng.random(80)}).to_csv(tmp_path/'m'/'scores.csv', index=False)
    live = tmp_path/'live'/'plots'/'metrics'/'train'; live.mkdir(parents=True)
    (live/'loss.tsv').write_text('timestamp\tstep\tloss\n' + ''.join(f'{i}\t{i}\t{3 / (i + 1) + .1 * rng.random():.4f}\n' for i in range(120)))
    (tmp_path/'t.jsonl').write_text(json.dumps(dict(study_id='1', triplets=[dict(entity='effusion', position='left_pleural', exist=1),
                                                                            dict(entity='pneumothorax', position=None, exist=0)])) + '\n')
    return tmp_path


def test_result_tables_and_curves_notebooks(outputs):
    params = dict(metrics_dir='m', finetune_glob='ft/*/metrics.json', scores_csv='m/*.csv', live_dir='live', triplets='t.jsonl')
    figures.run_figures(params, 'reports', REPO/'nbs'/'figures', only=['result_tables', 'curves'], html=False)
    r = outputs/'reports'
    ft = pd.read_csv(r/'table_finetune_ours.csv', index_col=0)
    row = ft[(ft.task == 'classify') & (ft.labels == '100 %')].iloc[0]
    assert (row.ours_pretrained, row.ours_scratch) == ('0.900 [0.880, 0.920]', '0.700 [0.680, 0.720]') and 'paper' not in ft.columns
    assert ft[(ft.task == 'classify') & (ft.labels == '1 %')].ours_pretrained.item() == 'not run'
    assert ft[(ft.task == 'segment') & (ft.labels == '100 %')].note.item() == 'saturated: the synthetic demo task is easy for segment (pretrained); this number cannot tell methods apart'
    assert ft[(ft.task == 'classify') & (ft.labels == '100 %')].note.isna().all()   # not saturated: no note
    pub = pd.read_csv(r/'table_finetune_paper.csv', index_col=0)
    assert pub[pub.task == 'segment'].value.tolist() == [0.6659, 0.721, 0.7937]
    assert set(pub[pub.task == 'segment'].source) == {'paper (SIIM-ACR, real data), not comparable'}
    zs = pd.read_csv(r/'table_zeroshot_zeroshot_demo_description.csv', index_col=0)
    assert zs.loc['effusion', 'note'].startswith('saturated: the synthetic demo task is easy for effusion') and pd.isna(zs.loc['pneumoperitoneum', 'note'])
    un = pd.read_csv(r/'table_unseen_zeroshot_demo.csv', index_col=0)
    assert un.name_auroc.tolist() == ['0.550 [0.530, 0.570]', '0.6561'] and un.description_auroc.tolist() == ['0.660 [0.640, 0.680]', '0.7396']
    for f in ('finetune.png', 'curves_scores.png', 'curves_scores_name.png', 'training_curves.png', 'label_stats.png'):
        assert (r/f).stat().st_size > 1000, f


def test_result_tables_without_finetune(outputs):
    figures.run_figures(dict(metrics_dir='m', finetune_glob='nothing/*/metrics.json'), 'reports', REPO/'nbs'/'figures', only=['result_tables'], html=False)
    ft = pd.read_csv(outputs/'reports'/'table_finetune_ours.csv', index_col=0)
    assert len(ft) == 7 and set(ft.ours_pretrained) == {'not run'} and not (outputs/'reports'/'finetune.png').exists()
    assert len(pd.read_csv(outputs/'reports'/'table_finetune_paper.csv')) == 7


def test_heatmap_gallery_notebook(outputs):
    torch = pytest.importorskip('torch')
    from medklip.data.demo import DemoParams, generate_demo
    from medklip.model import MedKLIP, MedKLIPConfig
    from medklip.vocab import ENTITIES, POSITIONS, vocab_hash
    generate_demo(outputs/'demo', DemoParams(seed=1, n_patients=9, studies_per_patient=(1, 2), size=(64, 80), unseen_rate=0.0))
    from transformers import BertConfig, BertModel, BertTokenizer
    (outputs/'txt').mkdir(); (outputs/'txt'/'vocab.txt').write_text('\n'.join(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'air', 'free', 'the']) + '\n')
    BertTokenizer(str(outputs/'txt'/'vocab.txt')).save_pretrained(outputs/'txt')   # a tiny local text model for the unseen label
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, max_position_embeddings=128)).save_pretrained(outputs/'txt')
    cfg = MedKLIPConfig(backbone='tiny', image_size=32, d_model=16, layers=1, heads=2, ffn=32, dropout=0.0, text_dim=8)
    meta = dict(config=cfg.to_dict(), entities=list(ENTITIES), positions=list(POSITIONS), vocab_hash=vocab_hash(), kb_hash='x', text_model=str(outputs/'txt'),
                entity_emb=torch.randn(len(ENTITIES), 8), position_emb=torch.randn(len(POSITIONS), 8), image_size=32, mean=0.5, std=0.25)
    torch.save(dict(format='medklip-checkpoint-1', model=MedKLIP(cfg).state_dict(), meta=meta), outputs/'m.ckpt')
    params = dict(checkpoint='m.ckpt', dataset='demo', root='demo', split='', tolerance=10, n_examples=2, max_images=50)
    figures.run_figures(params, 'reports', REPO/'nbs'/'figures', only=['heatmap_gallery'], html=False)
    assert (outputs/'reports'/'gallery_demo_hits.png').stat().st_size > 1000
    assert (outputs/'reports'/'gallery_demo_misses.png').stat().st_size > 1000


def test_gallery_notebook_failure_is_reported(outputs):
    with pytest.raises(MedklipError, match='heatmap_gallery.ipynb failed'):
        figures.run_figures(dict(checkpoint='missing.ckpt', root='.'), 'reports', REPO/'nbs'/'figures', only=['heatmap_gallery'], html=False)


def test_executed_notebooks_keep_no_live_widgets(tmp_path, monkeypatch):
    "A progress-bar widget (random model id, shown or not depending on load time) never reaches a report; the kernel's env has bars off and is restored."
    import os, nbformat
    from medklip.viz.figures import _quiet_kernel_env, _strip_run_metadata
    nb = nbformat.v4.new_notebook(metadata=dict(widgets={'state': {}}))
    c = nbformat.v4.new_code_cell('x')
    c.outputs = [nbformat.v4.new_output('display_data', data={'application/vnd.jupyter.widget-view+json': {'model_id': 'abc'}, 'text/plain': 'Loading'}),
                 nbformat.v4.new_output('stream', name='stdout', text='4 hits\n')]
    nb.cells = [c]; p = tmp_path/'x.ipynb'; nbformat.write(nb, p)
    _strip_run_metadata(p)
    out = nbformat.read(p, as_version=4)
    assert [o.output_type for o in out.cells[0].outputs] == ['stream'] and 'widgets' not in out.metadata
    monkeypatch.delenv('TQDM_DISABLE', raising=False)
    with _quiet_kernel_env(): assert os.environ['TQDM_DISABLE'] == '1' and os.environ['HF_HUB_DISABLE_PROGRESS_BARS'] == '1'
    assert 'TQDM_DISABLE' not in os.environ


def test_report_outputs_do_not_depend_on_timing(tmp_path, capsys):
    "Stdout flushed in two chunks (a busy machine) is saved as one output, as on an idle one; stderr goes to the log, not the report."
    import nbformat
    from medklip.viz.figures import _strip_run_metadata
    def run(chunks):
        nb = nbformat.v4.new_notebook(); c = nbformat.v4.new_code_cell('x', id='c0')
        c.outputs = [nbformat.v4.new_output('stream', name=n, text=t) for n, t in chunks] + [nbformat.v4.new_output('display_data', data={'text/plain': 'fig'})]
        nb.cells = [c]; p = tmp_path/'x.ipynb'; nbformat.write(nb, p); _strip_run_metadata(p)
        return p.read_bytes()
    idle = run([('stdout', 'a\nb\n')])
    busy = run([('stdout', 'a\n'), ('stderr', 'Matplotlib is building the font cache\n'), ('stdout', 'b\n')])
    assert busy == idle
    assert 'x.ipynb: Matplotlib is building the font cache' in capsys.readouterr().err


def test_heatmap_gallery_without_regions(outputs):
    "MIMIC-layout data read by the `mimic` loader (no boxes, no masks): heatmaps without outlines, and the page says so."
    torch = pytest.importorskip('torch')
    from medklip.data.demo import DemoParams, generate_demo
    from test_zeroshot import make_ckpt
    generate_demo(outputs/'mimic', DemoParams(seed=1, n_patients=6, studies_per_patient=(1, 1), size=(64, 64), unseen_rate=0.0))
    make_ckpt(outputs/'m.ckpt')
    params = dict(checkpoint='m.ckpt', dataset='mimic', root='mimic', split='', n_examples=2, max_images=50)
    figures.run_figures(params, 'reports', REPO/'nbs'/'figures', only=['heatmap_gallery'], html=False)
    assert (outputs/'reports'/'gallery_mimic_heatmaps.png').stat().st_size > 1000
    assert not (outputs/'reports'/'gallery_mimic_hits.png').exists()
    assert 'drawn without outlines' in (outputs/'reports'/'heatmap_gallery.ipynb').read_text()


def test_training_panel_names_what_its_rolling_mean_averages():
    "A loss logged every step is smoothed over steps; one logged every log_every steps over logged values, not steps."
    def legend(steps):
        v = np.random.default_rng(0).random(len(steps))
        fig = figures.plot_training({'train/loss': pd.DataFrame(dict(step=steps, value=v))})
        return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend(np.arange(1, 121)) == ['mean of 5 steps']
    assert legend(np.arange(10, 1210, 10)) == ['mean of 5 logged values']


def test_unseen_table_and_verdict_with_aspects_and_several_unseen_findings():
    "Reports of `--prompt all`: every unseen finding by name, description and aspects, with both paired differences, one sentence each."
    rep = _zeroshot_report()
    for f, a in (('pneumoperitoneum', .8), ('lung_cavity', .5)):
        for p in rep['prompts'].values(): p['classes'].setdefault(f, dict(p['classes']['pneumoperitoneum']))
    rep['prompts']['aspects'] = dict(classes={f: dict(auroc=_stat(a)) for f, a in (('effusion', .9), ('pneumoperitoneum', .8), ('lung_cavity', .5))})
    rep['unseen']['pneumoperitoneum'].update(aspects_auroc=.8, aspects_difference=dict(value=.25, ci=[.1, .4]), aspects=['density: lucency', 'shape: crescent'])
    rep['unseen']['lung_cavity'] = dict(n=60, n_pos=10, name_auroc=.55, description_auroc=.66, aspects_auroc=.5, difference=dict(value=.11, ci=[-.01, .2]),
                                        aspects_difference=dict(value=-.05, ci=[-.2, .1]), aspects=['shape: round'])
    t = figures.unseen_table(rep)
    ours = t[t.source == 'ours'].set_index('finding')
    assert list(ours.index) == ['pneumoperitoneum', 'lung_cavity'] and ours.loc['pneumoperitoneum', 'aspects_auroc'] == '0.800 [0.780, 0.820]'
    assert ours.loc['pneumoperitoneum', 'aspects_minus_name'].startswith('0.250') and ours.loc['lung_cavity', 'aspects'] == 'shape: round'
    v = figures.unseen_verdict(rep)
    assert len(v) == 2 and 'the aspects beats the name (the paired interval lies above 0)' in v[0]
    assert 'aspects − name' in v[1] and 'no difference is shown' in v[1] and 'the aspects prompt gives AUROC' in v[1]
    old = figures.unseen_table(_zeroshot_report())                     # a name/description report keeps its columns
    assert 'aspects_auroc' not in old.columns and 'aspects' not in ' '.join(figures.unseen_verdict(_zeroshot_report()))
