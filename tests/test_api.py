"`medklip.load` / `MedKLIPModel` and `medklip predict` on a tiny random checkpoint: same scores as `medklip heatmap`, any image type, hub layout, resumable CSV."
import csv, json, os, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
import medklip
from medklip.cli import main
from test_zeroshot import make_ckpt

REPO = Path(__file__).resolve().parents[1]
embed = lambda t: torch.as_tensor(np.random.default_rng(len(t[0])).normal(size=(len(t), 8)), dtype=torch.float32)
FREE = 'a dark crescent below the right hemidiaphragm'


def _img(seed=0, shape=(45, 70)): return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_import_is_light():
    code = "import sys, medklip; assert 'torch' not in sys.modules; medklip.load; assert 'torch' not in sys.modules; print('ok')"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert r.stdout.strip() == 'ok', r.stderr
    with pytest.raises(AttributeError): medklip.no_such_thing


def test_predict_any_image_type_matches_heatmap(tmp_path):
    from medklip.viz.overlay import run_heatmap
    ck = make_ckpt(tmp_path/'m.ckpt'); m = medklip.load(ck, embed=embed)
    im = _img(); Image.fromarray(im).save(tmp_path/'x.png')
    df = m.predict([tmp_path/'x.png', im, Image.fromarray(im), np.stack([im] * 3, -1), im / 255.], ['effusion', 'pneumoperitoneum', FREE])
    assert df.shape == (5, 3) and list(df.columns) == ['effusion', 'pneumoperitoneum', FREE] and df.index[0] == str(tmp_path/'x.png')
    assert np.allclose(df.values, df.values[:1], atol=1e-6)
    assert df.attrs['queries'] == {'effusion': 'entity', 'pneumoperitoneum': 'extra', FREE: 'text'}
    for q in ('effusion', 'pneumoperitoneum'):   # the same score as `medklip heatmap`, which `zeroshot` matches (test_infer)
        assert abs(run_heatmap(tmp_path/'x.png', ck, tmp_path/'o.png', entity=q, embed=embed) - df[q].iloc[0]) < 1e-6
    # a (N, H, W) stack is N images
    assert np.allclose(m.predict(np.stack([im, im]), ['effusion']).values[:, 0], df['effusion'].iloc[0], atol=1e-6)
    # images of different sizes in one batch score as they do alone
    other = _img(1, (30, 20))
    both = m.predict([im, other], ['effusion']).values[:, 0]
    assert np.allclose(both, [m.predict(im, ['effusion']).values[0, 0], m.predict(other, ['effusion']).values[0, 0]], atol=1e-6)


def test_heatmaps_at_image_size(tmp_path):
    m = medklip.load(make_ckpt(tmp_path/'m.ckpt'), embed=embed)
    h = m.heatmaps(_img(), ['effusion', FREE])
    assert list(h) == ['effusion', FREE] and all(v.shape == (45, 70) and v.dtype == np.float32 for v in h.values())
    raw = m.heatmaps(_img(), 'effusion', raw=True)['effusion']
    assert raw.ndim == 2 and raw.shape != (45, 70) and np.isclose(raw.mean(), h['effusion'].mean(), rtol=0.2)


@pytest.mark.parametrize("bad,msg", [(np.zeros((2, 4, 4, 4, 4)), "has shape"), (np.ones((5, 5), np.float32) * 3, 'zero-variance'),
                                     (np.array([[np.nan, 1.]]), 'NaN')])
def test_bad_arrays_are_one_line_errors(tmp_path, bad, msg):
    from medklip.core import MedklipError
    m = medklip.load(make_ckpt(tmp_path/'m.ckpt'))
    with pytest.raises(MedklipError, match=msg): m.predict(bad, ['effusion'])
    with pytest.raises(MedklipError, match='no findings'): m.predict(_img(), [])


def test_save_pretrained_folder_and_hub_cache_load_the_same(tmp_path):
    m = medklip.load(make_ckpt(tmp_path/'m.ckpt'), embed=embed)
    d = m.save_pretrained(tmp_path/'saved')
    cfg = json.loads((d/'config.json').read_text())
    assert cfg['library_name'] == 'medklip' and cfg['backbone'] == 'tiny'
    want = m.predict(_img(), ['effusion', FREE]).values
    assert np.allclose(medklip.load(d, embed=embed).predict(_img(), ['effusion', FREE]).values, want, atol=1e-6)
    # the same files in a hub cache (what snapshot_download leaves) load by hub id, offline
    snap = tmp_path/'hub'/'models--org--tiny-medklip'/'snapshots'/('a' * 40)
    snap.mkdir(parents=True)
    for f in d.iterdir(): (snap/f.name).write_bytes(f.read_bytes())
    (tmp_path/'hub'/'models--org--tiny-medklip'/'refs').mkdir(); (tmp_path/'hub'/'models--org--tiny-medklip'/'refs'/'main').write_text('a' * 40)
    h = medklip.load('org/tiny-medklip', cache_dir=tmp_path/'hub', embed=embed)
    assert np.allclose(h.predict(_img(), ['effusion', FREE]).values, want, atol=1e-6)


def test_hub_id_offline_is_one_line_error(tmp_path):
    from medklip.core import MedklipError
    with pytest.raises(MedklipError) as e: medklip.load('org/not-cached', cache_dir=tmp_path)
    assert 'offline' in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(MedklipError, match='not found'): medklip.load(tmp_path/'nothing')
    with pytest.raises(MedklipError, match='checkpoint not found') as e: medklip.load('runs/last.ckpt')   # a path, not a hub id
    assert 'offline' not in str(e.value)


def _tree(tmp_path):
    from medklip.data.io import write_test_dicom
    d = tmp_path/'xrays'; (d/'sub').mkdir(parents=True)
    Image.fromarray(_img(0)).save(d/'a.png'); Image.fromarray(_img(1)).convert('RGB').save(d/'sub'/'b.jpg')
    write_test_dicom(d/'sub'/'c.dcm', np.random.default_rng(2).integers(0, 4000, (40, 30)).astype(np.uint16))
    (d/'broken.png').write_bytes(b'not an image'); Image.fromarray(np.full((9, 9), 7, np.uint8)).save(d/'flat.png')
    (d/'notes.txt').write_text('ignored'); (d/'.hidden').mkdir(); Image.fromarray(_img(3)).save(d/'.hidden'/'z.png')
    return d


def test_predict_cli_folder_resume_and_errors(tmp_path, capsys, monkeypatch):
    ck, d, out = make_ckpt(tmp_path/'m.ckpt'), _tree(tmp_path), tmp_path/'scores.csv'
    args = ['predict', str(d), '--checkpoint', str(ck), '--findings', 'effusion', 'Nodule', '--out', str(out), '--batch-size', '2']
    assert main(args) == 0
    io = capsys.readouterr()
    rows = list(csv.DictReader(open(out)))
    assert [Path(r['image']).name for r in rows] == ['a.png', 'b.jpg', 'c.dcm']   # sorted paths; hidden folders and other files skipped
    assert list(rows[0]) == ['image', 'effusion', 'Nodule'] and all(0 <= float(r['effusion']) <= 1 for r in rows)
    errs = list(csv.DictReader(open(tmp_path/'scores.errors.csv')))
    assert sorted(Path(e['image']).name for e in errs) == ['broken.png', 'flat.png'] and 'zero-variance' in ' '.join(e['reason'] for e in errs)
    assert sum('skipped' in l for l in io.err.splitlines()) == 2 and '3 images scored' in io.out and 'unreadable' in io.out
    # the score equals the API's on the same file
    m = medklip.load(ck)
    a = next(r for r in rows if r['image'].endswith('a.png'))
    assert abs(float(a['effusion']) - m.predict(a['image'], ['effusion']).values[0, 0]) < 1e-5
    # a rerun scores nothing again (rows already there are skipped) and leaves the file identical
    before = out.read_bytes()
    import medklip.api as api
    calls = []; orig = api.MedKLIPModel._run
    monkeypatch.setattr(api.MedKLIPModel, '_run', lambda self, ims, f: calls.append(len(ims)) or orig(self, ims, f))
    Image.fromarray(_img(5)).save(d/'new.png')
    assert main(args) == 0
    assert calls == [1] and '1 images scored, 3 already' in capsys.readouterr().out
    assert out.read_bytes().startswith(before.splitlines(keepends=True)[0]) and len(list(csv.DictReader(open(out)))) == 4
    # other findings or another checkpoint never append to this file
    assert main(args[:-5] + ['--findings', 'effusion', '--out', str(out)]) == 2
    assert 'other findings' in capsys.readouterr().err
    ck2 = make_ckpt(tmp_path/'m2.ckpt'); torch.save({**torch.load(ck2, weights_only=True), 'extra': 1}, ck2)
    assert main(['predict', str(d), '--checkpoint', str(ck2), '--findings', 'effusion', 'Nodule', '--out', str(out)]) == 2
    assert 'another checkpoint' in capsys.readouterr().err


def test_predict_cli_csv_glob_heatmaps(tmp_path, capsys):
    ck, d = make_ckpt(tmp_path/'m.ckpt'), _tree(tmp_path)
    (tmp_path/'list.csv').write_text('path\nxrays/a.png\nxrays/sub/c.dcm\n')
    assert main(['predict', str(tmp_path/'list.csv'), '--checkpoint', str(ck), '--findings', 'effusion', '--out', str(tmp_path/'s.csv'),
                 '--heatmaps', str(tmp_path/'hm')]) == 0
    rows = list(csv.DictReader(open(tmp_path/'s.csv')))
    assert [Path(r['image']).name for r in rows] == ['a.png', 'c.dcm']
    pngs = sorted((tmp_path/'hm').iterdir())
    assert len(pngs) == 2 and all(p.name.endswith('__effusion.png') for p in pngs)
    assert sorted(Image.open(p).size for p in pngs) == [(30, 40), (70, 45)]
    (tmp_path/'list.txt').write_text('# one path a line\nxrays/sub/b.jpg\n')
    assert main(['predict', str(tmp_path/'list.txt'), '--checkpoint', str(ck), '--findings', 'effusion', '--out', str(tmp_path/'t.csv')]) == 0
    assert [Path(r['image']).name for r in csv.DictReader(open(tmp_path/'t.csv'))] == ['b.jpg']
    (tmp_path/'bad.csv').write_text('path,note\nxrays/a.png,x\n,y\n')
    assert main(['predict', str(tmp_path/'bad.csv'), '--checkpoint', str(ck), '--findings', 'effusion', '--out', str(tmp_path/'b.csv')]) == 2
    assert 'line 3: empty path' in capsys.readouterr().err
    assert main(['predict', str(d/'sub'/'*.*'), '--checkpoint', str(ck), '--findings', 'effusion', '--out', str(tmp_path/'g.csv')]) == 0
    assert sorted(Path(r['image']).name for r in csv.DictReader(open(tmp_path/'g.csv'))) == ['b.jpg', 'c.dcm']


@pytest.mark.parametrize("args,msg", [
    (['--findings', 'effusion', 'effusion'], 'twice'),
    (['--findings', 'effusion', '--batch-size', '0'], 'batch-size'),
    (['--findings'], 'expected at least one'),
    (['--findings', 'effusion', '--nope'], 'unrecognized'),
    (['--findings', 'effusion', 'INPUT=missing'], 'not found'),
    (['--findings', 'effusion', 'INPUT=empty'], 'no PNG, JPEG or DICOM'),
    (['--findings', 'effusion', 'CKPT=missing'], 'not found'),
    (['--findings', 'effusion', 'OUT=x.txt'], 'must end in .csv'),
])
def test_predict_cli_bad_args_one_line(tmp_path, capsys, args, msg):
    ck, d = make_ckpt(tmp_path/'m.ckpt'), _tree(tmp_path)
    (tmp_path/'empty').mkdir()
    inp = {'INPUT=missing': str(tmp_path/'nope'), 'INPUT=empty': str(tmp_path/'empty')}.get(args[-1], str(d))
    ckp = str(tmp_path/'none.ckpt') if args[-1] == 'CKPT=missing' else str(ck)
    out = str(tmp_path/'x.txt') if args[-1] == 'OUT=x.txt' else str(tmp_path/'s.csv')
    args = [a for a in args if '=' not in a]
    assert main(['predict', inp, '--checkpoint', ckp, '--out', out, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and msg in err, err
