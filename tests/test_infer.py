"`medklip heatmap` (medklip.viz.overlay) on a tiny random checkpoint: overlay at the image's own size, score printed, clear errors."
import numpy as np, pytest
from PIL import Image
from medklip.cli import main
from test_zeroshot import make_ckpt


def test_heatmap_png(tmp_path, capsys):
    ck = make_ckpt(tmp_path/'m.ckpt')
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (45, 70), dtype=np.uint8)).save(tmp_path/'x.png')
    assert main(['heatmap', str(tmp_path/'x.png'), '--checkpoint', str(ck), '--entity', 'effusion', '--out', str(tmp_path/'o.png')]) == 0
    assert 'existence score' in capsys.readouterr().out
    assert Image.open(tmp_path/'o.png').size == (70, 45)


def test_heatmap_dicom(tmp_path):
    from medklip.data.io import write_test_dicom
    write_test_dicom(tmp_path/'x.dcm', np.random.default_rng(1).integers(0, 4000, (40, 30)).astype(np.uint16))
    assert main(['heatmap', str(tmp_path/'x.dcm'), '--checkpoint', str(make_ckpt(tmp_path/'m.ckpt')), '--entity', 'nodule', '--out', str(tmp_path/'o.png')]) == 0
    assert Image.open(tmp_path/'o.png').size == (30, 40)


@pytest.mark.parametrize("args,msg", [(['--entity', 'zebra'], 'unknown entity'), (['--entity', 'effusion', 'MISSING'], 'image not found')])
def test_heatmap_errors(tmp_path, capsys, args, msg):
    ck = make_ckpt(tmp_path/'m.ckpt')
    Image.fromarray(np.zeros((8, 8), np.uint8) + 9).save(tmp_path/'x.png')
    img = str(tmp_path/'nope.png') if 'MISSING' in args else str(tmp_path/'x.png')
    args = [a for a in args if a != 'MISSING']
    assert main(['heatmap', img, '--checkpoint', str(ck), *args, '--out', str(tmp_path/'o.png')]) == 2
    err = capsys.readouterr().err.strip(); assert err.count('\n') == 0 and msg in err


def test_entity_score_same_in_heatmap_and_zeroshot(tmp_path):
    "Query convention: an entity's (and an extra's) score is identical via `heatmap` and via `zeroshot` on the same image."
    import json, pandas as pd, torch
    from medklip.eval.infer import load_model
    from medklip.viz.overlay import run_heatmap
    from medklip.eval.zeroshot import run_zeroshot, store_source
    ck = make_ckpt(tmp_path/'m.ckpt')
    rng = np.random.default_rng(3); imgs = rng.integers(0, 256, (4, 32, 32), dtype=np.uint8)   # the model's own size: no resize
    st = tmp_path/'store'; st.mkdir()
    np.save(st/'images.npy', imgs); np.save(st/'labels.npy', np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32))
    pd.DataFrame(dict(row=range(4), image_id=[f'i{i}' for i in range(4)], study_id='s', patient_id='p', split='test', view='PA',
                      image_path='x', orig_h=32, orig_w=32)).to_csv(st/'index.csv', index=False)
    (st/'meta.json').write_text(json.dumps(dict(dataset='demo', size=32, pathologies=['effusion', 'pneumoperitoneum'], mean=.5, std=.25)))
    embed = lambda t: torch.as_tensor(np.random.default_rng(len(t[0])).normal(size=(len(t), 8)), dtype=torch.float32)
    mm = load_model(ck)
    _, sc = run_zeroshot(*mm, store_source(st, 'test'), None, 'description', n_boot=0, embed=embed)
    Image.fromarray(imgs[2]).save(tmp_path/'x.png')
    for j, q in enumerate(['effusion', 'pneumoperitoneum']):
        h = run_heatmap(tmp_path/'x.png', ck, tmp_path/'o.png', entity=q, model_meta=mm, embed=embed)
        assert abs(h - sc['description'][2, j]) < 1e-6, q


def test_heatmap_on_a_directory_says_so(tmp_path, capsys):
    from medklip.cli import main
    rc = main(['heatmap', str(tmp_path), '--checkpoint', str(tmp_path/'none.ckpt'), '--entity', 'effusion', '--out', str(tmp_path/'h.png')])
    err = capsys.readouterr().err
    assert rc == 2 and 'is a directory' in err and 'not found' not in err


def test_damaged_model_files_are_one_line_errors(tmp_path, capsys):
    "A truncated model.safetensors, a pickle renamed to it, or a truncated .ckpt: one line naming the file, with advice fit for inference."
    import pickle, torch
    from medklip.checkpoint import load_checkpoint, save_final
    ck = make_ckpt(tmp_path/'m.ckpt')
    model, meta = load_checkpoint(ck)
    save_final(tmp_path/'model', model, dict(meta, extra_names=[], extra_emb=torch.zeros(0, 8)))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8)).save(tmp_path/'x.png')
    st, good_ck = tmp_path/'model/model.safetensors', ck.read_bytes()
    good = st.read_bytes()
    for target, data in ((st, good[:len(good) // 2]), (st, pickle.dumps({'model': {'w': [1.0]}})), (ck, good_ck[:2000])):
        target.write_bytes(data)
        arg = tmp_path/'model' if target == st else ck
        assert main(['heatmap', str(tmp_path/'x.png'), '--checkpoint', str(arg), '--entity', 'effusion', '--out', str(tmp_path/'o.png')]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count('\n') == 0 and target.name in err and 'train from scratch' not in err and 'medklip pretrain' in err, err
        target.write_bytes(good if target == st else good_ck)
