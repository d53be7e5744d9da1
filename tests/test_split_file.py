"`split_file`: every evaluation loader scores exactly the images of a test list (ids or paths relative to the root); bad lists are one-line errors."
import json
import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from medklip.cli import main
from medklip.core import InputError
from medklip.data.datasets import DATASETS, get_dataset
from medklip.data.demo import DemoParams, generate_demo
from test_zeroshot import make_ckpt


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp('demo')
    generate_demo(d/'demo', DemoParams(seed=2, n_patients=8, studies_per_patient=(1, 1), size=(64, 64), unseen_rate=0.5))
    return d


@pytest.fixture(autouse=True)
def fake_text_encoder(monkeypatch):
    import medklip.text.embed as E
    monkeypatch.setattr(E, 'embed_texts', lambda texts, *a, **k: torch.stack(
        [torch.as_tensor(np.random.default_rng(sum(map(ord, t))).normal(size=8), dtype=torch.float32) for t in texts]))


def test_list_of_ids_paths_and_csv(demo):
    full = get_dataset('demo', demo/'demo')
    ids = full.csv['image_id'].tolist()
    rel = [str(p.relative_to(demo/'demo')) for p in map(__import__('pathlib').Path, full.csv['image_path'])]
    (demo/'l.txt').write_text(f"# three images, any form\n{ids[5]}\n{rel[0]}\n./{rel[2]}\n\n{ids[5]}\n")
    ds = get_dataset('demo', demo/'demo', 'train', split_file=demo/'l.txt')
    assert sorted(ds.csv['image_id']) == sorted([ids[0], ids[2], ids[5]]) and set(ds.csv['split']) == {'test'}
    assert np.array_equal(ds.labels, full.labels[[0, 2, 5]]) and ds[0]['image_id'] == ids[0]
    pd.DataFrame({'dicom_id': [ids[1], ids[3]], 'x': 1}).to_csv(demo/'l.csv', index=False)
    assert sorted(get_dataset('demo', demo/'demo', split_file=demo/'l.csv').csv['image_id']) == sorted([ids[1], ids[3]])


@pytest.mark.parametrize("text,msg", [("a\n", 'line 1'), ("\n\n", 'lists no images'), (None, 'not found')])
def test_bad_lists(demo, text, msg):
    f = demo/'bad.txt'
    if text is None: f.unlink(missing_ok=True)
    else: f.write_text(text)
    with pytest.raises(InputError, match=msg): get_dataset('demo', demo/'demo', split_file=f)


def test_ambiguous_name_names_the_line(tmp_path):
    # CheXpert-like: the same file name under two patients
    r = tmp_path/'tb'
    for i, sub in enumerate(['p1', 'p2']):
        (r/'images'/sub).mkdir(parents=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16), dtype=np.uint8)).save(r/'images'/sub/'view1.png')
    pd.DataFrame(dict(image_id=['a', 'b'], patient_id=['a', 'b'], image_path=['images/p1/view1.png', 'images/p2/view1.png'],
                      tuberculosis=[0, 1])).to_csv(r/'labels.csv', index=False)
    (tmp_path/'l.txt').write_text('images/p2/view1.png\nview1.png\n')
    with pytest.raises(InputError, match=r'line 2.*names 2 images'): get_dataset('tb', r, split_file=tmp_path/'l.txt')
    (tmp_path/'l.txt').write_text('images/p2/view1.png\n')
    assert get_dataset('tb', r, split_file=tmp_path/'l.txt').csv['image_id'].tolist() == ['b']


def test_zeroshot_and_ground_on_a_list(demo, capsys):
    ck = make_ckpt(demo/'m.ckpt')
    full = get_dataset('demo', demo/'demo')
    region = [i for i in range(len(full)) if full[i]['boxes'] or full[i]['has_mask']][:3]
    other = [i for i in range(len(full)) if i not in region][:3]
    (demo/'t.txt').write_text('\n'.join(full.csv['image_id'][region + other]))
    assert main(['zeroshot', '--checkpoint', str(ck), '--dataset', 'demo', '--root', str(demo/'demo'), '--split-file', str(demo/'t.txt'),
                 '--n-boot', '0', '--out', str(demo/'z.json')]) == 0
    assert json.loads((demo/'z.json').read_text())['n_test'] == 6
    assert main(['ground', '--checkpoint', str(ck), '--dataset', 'demo', '--root', str(demo/'demo'), '--split-file', str(demo/'t.txt'),
                 '--out', str(demo/'g.json')]) == 0
    assert 0 < json.loads((demo/'g.json').read_text())['n_images'] <= 6 and len(region) == 3
    (demo/'t.txt').write_text('nope\n')
    assert main(['zeroshot', '--checkpoint', str(ck), '--dataset', 'demo', '--root', str(demo/'demo'), '--split-file', str(demo/'t.txt'),
                 '--n-boot', '0', '--out', str(demo/'z2.json')]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'line 1' in err and 'name no image' in err

