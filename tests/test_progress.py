"Progress bars: on a terminal and rank 0 only, off in CI/papermill or by MEDKLIP_PROGRESS; in pretraining (steps/s, images/s, loss, ETA), zeroshot, ground, prepare and predict; never in outputs."
import io, sys
import numpy as np, pytest, torch
from medklip.core import progress, progress_enabled


class _TTY(io.StringIO):
    def isatty(self): return True


@pytest.fixture
def tty(monkeypatch):
    for k in ('MEDKLIP_PROGRESS', 'RANK', 'CI'): monkeypatch.delenv(k, raising=False)
    for k in ('papermill', 'ipykernel'): monkeypatch.delitem(sys.modules, k, raising=False)
    return _TTY()   # each test puts it in place itself: pytest's capture resets sys.stderr after fixture set-up


@pytest.mark.parametrize("env,want", [({}, True), ({'CI': 'true'}, False), ({'RANK': '1'}, False), ({'MEDKLIP_PROGRESS': '0'}, False),
                                      ({'MEDKLIP_PROGRESS': '1', 'CI': 'true'}, True), ({'MEDKLIP_PROGRESS': '1', 'RANK': '2'}, False)])
def test_switch(tty, monkeypatch, env, want):
    monkeypatch.setattr(sys, 'stderr', tty)
    for k, v in env.items(): monkeypatch.setenv(k, v)
    assert progress_enabled() is want


def test_off_without_terminal_and_in_papermill(tty, monkeypatch):
    monkeypatch.setattr(sys, 'stderr', tty)
    monkeypatch.setitem(sys.modules, 'papermill', object()); assert not progress_enabled()
    monkeypatch.delitem(sys.modules, 'papermill'); assert progress_enabled()
    monkeypatch.setattr(sys, 'stderr', io.StringIO()); assert not progress_enabled()


def test_bar_writes_to_stderr_only(tty, monkeypatch):
    monkeypatch.setattr(sys, 'stderr', tty)
    assert sum(progress(range(5), desc='demo', unit='img')) == 10
    assert 'demo' in tty.getvalue() and '5/5' in tty.getvalue()


def test_pretrain_epoch_bar(tty, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, 'stderr', tty)
    import medklip.train as T
    from test_train import TINY
    c = T.make_synthetic_corpus(tmp_path/'c', n=24, size=48)
    T.pretrain(c/'store', c/'triplets.jsonl', c/'knowledge', tmp_path/'m', {**TINY, 'epochs': 1}, log=lambda *a: None)
    out = tty.getvalue()
    assert 'pretrain epoch 1/1' in out and 'step/s' in out.replace('s/step', 'step/s') and 'loss=' in out and 'img_s=' in out
    assert '3/3' in out   # 24 images, batch 6, 18 in train: 3 steps, and an ETA while running
    # nothing of it in the outputs
    assert not any(b'pretrain epoch' in f.read_bytes() for f in (tmp_path/'m').rglob('*') if f.is_file())


def test_zeroshot_ground_prepare_predict_bars(tty, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, 'stderr', tty)
    from PIL import Image
    import medklip.text.embed as E
    from medklip.cli import main
    from medklip.data.demo import DemoParams, generate_demo
    from test_store import tb_tree
    from test_zeroshot import make_ckpt, make_store
    monkeypatch.setattr(E, 'embed_texts', lambda texts, *a, **k: torch.randn(len(texts), 8))
    ck, st = make_ckpt(tmp_path/'m.ckpt'), make_store(tmp_path/'store')
    assert main(['zeroshot', '--checkpoint', str(ck), '--store', str(st), '--out', str(tmp_path/'z.json'), '--n-boot', '0']) == 0
    assert 'zeroshot test' in tty.getvalue() and 'zeroshot test' not in (tmp_path/'z.json').read_text()
    generate_demo(tmp_path/'demo', DemoParams(seed=1, n_patients=6, studies_per_patient=(1, 1), size=(64, 64), unseen_rate=0.5))
    assert main(['ground', '--checkpoint', str(ck), '--dataset', 'demo', '--root', str(tmp_path/'demo'), '--split', 'all', '--out', str(tmp_path/'g.json')]) == 0
    assert 'ground demo' in tty.getvalue()
    tb_tree(tmp_path/'tb', n=4)
    assert main(['prepare', '--dataset', 'tb', '--root', str(tmp_path/'tb'), '--out', str(tmp_path/'st'), '--size', '16', '--workers', '1']) == 0
    assert 'prepare tb' in tty.getvalue()
    (tmp_path/'x').mkdir(); Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8)).save(tmp_path/'x'/'a.png')
    assert main(['predict', str(tmp_path/'x'), '--checkpoint', str(ck), '--findings', 'effusion', '--out', str(tmp_path/'p.csv')]) == 0
    assert 'predict: 100%' in tty.getvalue()
    assert b'predict' not in (tmp_path/'p.csv').read_bytes()
    # --no-progress still silences prepare on a terminal
    n = len(tty.getvalue())
    assert main(['prepare', '--dataset', 'tb', '--root', str(tmp_path/'tb'), '--out', str(tmp_path/'st2'), '--size', '16', '--workers', '1', '--no-progress']) == 0
    assert 'prepare tb' not in tty.getvalue()[n:]
