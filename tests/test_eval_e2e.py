"End-to-end `medklip zeroshot` and `medklip ground` on a tiny generated demo corpus and a tiny random checkpoint."
import json
import numpy as np, pytest, torch
from medklip.cli import main
from medklip.data.demo import DemoParams, generate_demo
from test_zeroshot import make_ckpt


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp('demo')
    generate_demo(d/'demo', DemoParams(seed=1, n_patients=9, studies_per_patient=(1, 2), size=(64, 80), unseen_rate=0.5))
    return d


@pytest.fixture(autouse=True)
def fake_text_encoder(monkeypatch):
    "The tiny checkpoint has no text encoder: out-of-vocabulary prompts get a deterministic stand-in embedding."
    import medklip.text.embed as E
    monkeypatch.setattr(E, 'embed_texts', lambda texts, *a, **k: torch.stack(
        [torch.as_tensor(np.random.default_rng(sum(map(ord, t))).normal(size=8), dtype=torch.float32) for t in texts]))


def test_zeroshot_demo(demo):
    ck = make_ckpt(demo/'m.ckpt')
    assert main(['zeroshot', '--checkpoint', str(ck), '--dataset', 'demo', '--root', str(demo/'demo'), '--split', 'test',
                 '--val-split', 'validate', '--prompt', 'both', '--n-boot', '20', '--out', str(demo/'zs.json'), '--scores', str(demo/'zs.csv')]) == 0
    r = json.loads((demo/'zs.json').read_text())
    d, n = r['prompts']['description'], r['prompts']['name']
    assert 'pneumoperitoneum' in d['classes'] and d['classes']['pneumoperitoneum']['query']['kind'] == 'extra'
    assert d['classes']['effusion']['auroc'] == n['classes']['effusion']['auroc']          # entities: prompt-independent
    assert d['macro_seen']['auroc']['n_classes'] < d['macro']['auroc']['n_classes']
    assert set(r['unseen']) == {'pneumoperitoneum'}


def test_ground_demo(demo):
    ck = make_ckpt(demo/'m.ckpt')
    assert main(['ground', '--checkpoint', str(ck), '--dataset', 'demo', '--root', str(demo/'demo'), '--split', 'all',
                 '--out', str(demo/'gr.json')]) == 0
    g = json.loads((demo/'gr.json').read_text())
    assert g['overall']['n'] > 0 and 0 <= g['overall']['pointing_game'] <= g['overall']['pointing_cell'] <= 1
    assert g['thresholds']['grid'] == [2, 2] and g['thresholds']['raw_effective'] == pytest.approx(0.008 * 196 / 4)


def test_prompts_all_zeroshot_ground_heatmap(demo, capsys):
    "--prompt all: every unseen finding (the manifest's list) by name, description and aspects with paired differences; ground and heatmap per prompt."
    from medklip.data.demo import read_manifest
    ck = make_ckpt(demo/'m.ckpt')
    assert main(['zeroshot', '--checkpoint', str(ck), '--dataset', 'demo', '--root', str(demo/'demo'), '--split', 'test',
                 '--val-split', 'validate', '--prompt', 'all', '--n-boot', '20', '--out', str(demo/'zsa.json')]) == 0
    r = json.loads((demo/'zsa.json').read_text())
    assert set(r['prompts']) == {'name', 'description', 'aspects'}
    unseen = read_manifest(demo/'demo')['unseen_findings']
    assert set(r['unseen']) == {u for u in unseen if u in r['prompts']['name']['classes']} and r['unseen']
    for u in r['unseen'].values():
        assert set(u['auroc']) == {'name', 'description', 'aspects'} and u['aspects']
        assert u['aspects_difference']['value'] == pytest.approx(u['aspects_auroc'] - u['name_auroc'])
        assert 'ci' in u['aspects_difference'] and 'ci' in u['difference'] and u['auroc']['aspects']['value'] == u['aspects_auroc']
    a = r['prompts']['aspects']['classes']
    assert a['effusion']['query']['kind'] == 'aspects' and r['prompts']['name']['classes']['effusion']['query']['kind'] == 'entity'
    assert 'macro_seen' in r['prompts']['aspects']
    out = capsys.readouterr().out
    assert 'aspects - name' in out
    assert main(['ground', '--checkpoint', str(ck), '--dataset', 'demo', '--root', str(demo/'demo'), '--split', 'all',
                 '--prompt', 'all', '--out', str(demo/'gra.json')]) == 0
    g = json.loads((demo/'gra.json').read_text())
    assert set(g['prompts']) == {'name', 'description', 'aspects'} and g['overall'] == g['prompts']['description']['overall']
    assert g['prompts']['aspects']['overall']['n'] == g['overall']['n']
    from PIL import Image
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)).save(demo/'x.png')
    assert main(['heatmap', str(demo/'x.png'), '--checkpoint', str(ck), '--entity', unseen[0], '--prompt', 'all', '--out', str(demo/'h.png')]) == 0
    assert all((demo/f'h-{p}.png').exists() for p in ('name', 'description', 'aspects'))
    assert 'by aspects:' in capsys.readouterr().out
    assert main(['heatmap', str(demo/'x.png'), '--checkpoint', str(ck), '--entity', 'normal', '--prompt', 'aspects', '--out', str(demo/'n.png')]) == 0
    assert 'no aspects: asked by its description' in capsys.readouterr().out
