"`medklip heatmap` on a tiny random checkpoint: overlay at the image's own size, score printed, clear errors."
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
