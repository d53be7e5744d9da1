"End-to-end `medklip zeroshot` on a tiny random MedKLIP checkpoint and a tiny fake image store; label maps."
import json, subprocess, sys
import numpy as np, pandas as pd, pytest, torch
from medklip.cli import main
from medklip.eval.infer import load_label_maps, resolve_query
from medklip.model import MedKLIP, MedKLIPConfig
from medklip.vocab import ENTITIES, POSITIONS, vocab_hash


def make_ckpt(path, vocab=None):
    torch.manual_seed(0)
    cfg = MedKLIPConfig(backbone='tiny', image_size=32, d_model=16, layers=1, heads=2, ffn=32, dropout=0.0, text_dim=8)
    meta = dict(config=cfg.to_dict(), entities=list(ENTITIES), positions=list(POSITIONS), vocab_hash=vocab or vocab_hash(),
                kb_hash='x', text_model='none', entity_emb=torch.randn(75, 8), position_emb=torch.randn(51, 8),
                image_size=32, mean=0.5, std=0.25)
    torch.save(dict(format='medklip-checkpoint-1', model=MedKLIP(cfg).state_dict(), meta=meta), path)
    return path


def make_store(d, n=30):
    rng = np.random.default_rng(0); d.mkdir(parents=True, exist_ok=True)
    np.save(d/'images.npy', rng.integers(0, 256, (n, 24, 24), dtype=np.uint8))
    y = rng.integers(0, 2, (n, 3)).astype(np.float32); np.save(d/'labels.npy', y)
    pd.DataFrame(dict(row=range(n), image_id=[f'i{i}' for i in range(n)], study_id='s', patient_id='p',
                      split=['validate' if i % 3 == 0 else 'test' for i in range(n)], view='PA', image_path='x',
                      orig_h=24, orig_w=24)).to_csv(d/'index.csv', index=False)
    (d/'meta.json').write_text(json.dumps(dict(dataset='demo', size=24, pathologies=['effusion', 'Nodule', 'zzz_unknown'], mean=.5, std=.25)))
    return d


def test_zeroshot_end_to_end(tmp_path):
    ck, st = make_ckpt(tmp_path/'m.ckpt'), make_store(tmp_path/'store')
    rc = main(['zeroshot', '--checkpoint', str(ck), '--store', str(st), '--out', str(tmp_path/'m.json'),
               '--scores', str(tmp_path/'s.csv'), '--prompt', 'description', '--n-boot', '50', '--batch-size', '7'])
    assert rc == 0
    r = json.loads((tmp_path/'m.json').read_text())
    d = r['prompts']['description']
    assert list(d['classes']) == ['effusion', 'Nodule'] and r['unmapped'][0]['label'] == 'zzz_unknown'
    assert r['validation']['n'] == 10 and r['n_test'] == 20
    e = d['classes']['effusion']
    assert 0 <= e['auroc']['value'] <= 1 and len(e['auroc']['ci']) == 2 and e['val_threshold']['value'] is not None
    assert e['oracle_threshold']['note'].startswith('max-F1 threshold chosen on the test split')
    s = pd.read_csv(tmp_path/'s.csv'); assert len(s) == 20 and 'score:effusion:description' in s


def test_zeroshot_error_lines(tmp_path, capsys):
    st = make_store(tmp_path/'store')
    assert main(['zeroshot', '--checkpoint', str(tmp_path/'none.ckpt'), '--store', str(st), '--out', str(tmp_path/'m.json')]) == 2
    err = capsys.readouterr().err.strip(); assert err.count('\n') == 0 and 'checkpoint not found' in err
    ck = make_ckpt(tmp_path/'other.ckpt', vocab='0123456789abcdef')
    assert main(['zeroshot', '--checkpoint', str(ck), '--store', str(st), '--out', str(tmp_path/'m.json')]) == 2
    err = capsys.readouterr().err.strip(); assert err.count('\n') == 0 and 'vocabulary' in err
    assert main(['zeroshot', '--checkpoint', str(make_ckpt(tmp_path/'m.ckpt')), '--out', str(tmp_path/'m.json')]) == 2
    assert '--dataset and --root' in capsys.readouterr().err


def test_label_maps_resolve():
    maps = load_label_maps()
    assert {'chestxray14', 'chexpert', 'rsna', 'siim', 'covidx', 'tb', 'kermany', 'covid19_ieee8023', 'demo'} <= set(maps)
    for ds, m in maps.items():
        for lab in m: assert resolve_query(lab, ds) is not None, (ds, lab)
    assert resolve_query('Tuberculosis', 'tb').kind == 'extra'
    assert resolve_query('COVID-19', 'covid19_ieee8023', 'name').text == 'COVID-19'


def test_description_prompt_reads_the_users_knowledge_file(tmp_path):
    "`--kb-file` (params: knowledge.kb_file) reaches zeroshot: an unseen finding's description prompt embeds the user's text."
    from medklip.eval.zeroshot import build_queries, zeroshot_parser
    from medklip.text.knowledge import load_knowledge
    f = tmp_path/'kb.yaml'
    f.write_text("extra:\n  pneumoperitoneum:\n    name: pneumoperitoneum\n    description: a dark crescent of free air under the right hemidiaphragm\n")
    q, _ = build_queries(['Pneumoperitoneum'], 'demo', 'description', kb=load_knowledge(f))
    assert q['description'][0].text == 'a dark crescent of free air under the right hemidiaphragm'
    q0, _ = build_queries(['Pneumoperitoneum'], 'demo', 'description')
    assert q0['description'][0].text != q['description'][0].text        # the packaged text otherwise
    assert zeroshot_parser().parse_args(['--checkpoint', 'c', '--out', 'o', '--kb-file', str(f)]).kb_file == str(f)
