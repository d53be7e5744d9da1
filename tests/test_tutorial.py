"The tutorial the `tutorial` stage executes: it refuses to stand in when the stage asks for real results, and an executed copy is byte-reproducible."
from pathlib import Path

import pytest

from medklip.core import MedklipError
from medklip.viz.figures import figures_cli

ROOT = Path(__file__).resolve().parents[1]


def _run(out:Path, *sets:str) -> int:
    args = ['--params', '', '--notebooks', str(ROOT/'nbs'), '--only', 'tutorial_zeroshot', '--out', str(out)]
    for s in sets: args += ['--set', s]
    return figures_cli(args)


def test_stage_mode_refuses_missing_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MedklipError, match=r"failed in cell .*missing pipeline outputs .*checkpoint.*run `dvc repro`"):
        _run(tmp_path/'r', f'checkpoint={tmp_path}/no_model', 'require_results=true')


def test_stand_in_run_is_byte_reproducible(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for k in (1, 2): assert _run(Path(f'r{k}'), 'checkpoint=no_model', 'triplets=no.jsonl') == 0
    nb1, nb2 = (Path(f'r{k}')/'tutorial_zeroshot.ipynb' for k in (1, 2))
    text = nb1.read_text()
    assert 'MEANINGLESS' in text and 'image/png' in text and str(tmp_path) not in text   # outputs kept, no absolute paths
    assert nb1.read_bytes() == nb2.read_bytes().replace(b'out_dir = \\"r2\\"', b'out_dir = \\"r1\\"')   # only the injected out_dir differs
    assert (Path('r1')/'tutorial_zeroshot.html').read_bytes() == (Path('r2')/'tutorial_zeroshot.html').read_bytes()


def test_tutorial_on_a_dataset_without_regions(tmp_path, monkeypatch):
    "The stage's mode on MIMIC-layout data read by the `mimic` loader (no boxes or masks): it runs, and says heatmaps have no outlines."
    import json, torch
    from medklip.cli import main
    from medklip.data.demo import DemoParams, generate_demo
    from medklip.model import MedKLIP, MedKLIPConfig
    from medklip.text.parse import ReportParser, iter_reports
    from medklip.vocab import ENTITIES, POSITIONS, vocab_hash
    from transformers import BertConfig, BertModel, BertTokenizer
    monkeypatch.chdir(tmp_path)
    generate_demo(tmp_path/'mimic', DemoParams(seed=3, n_patients=8, studies_per_patient=(1, 1), size=(64, 64), unseen_rate=0.0))
    rp = ReportParser()
    (tmp_path/'t.jsonl').write_text(''.join(json.dumps(dict(study_id=s, triplets=rp.parse(x))) + '\n' for _, s, x in iter_reports(tmp_path/'mimic'/'mimic-cxr-reports')))
    (tmp_path/'txt').mkdir(); (tmp_path/'txt'/'vocab.txt').write_text('\n'.join(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'air', 'free']) + '\n')
    BertTokenizer(str(tmp_path/'txt'/'vocab.txt')).save_pretrained(tmp_path/'txt')   # a tiny local text model for out-of-vocabulary findings
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, max_position_embeddings=128)).save_pretrained(tmp_path/'txt')
    cfg = MedKLIPConfig(backbone='tiny', image_size=32, d_model=16, layers=1, heads=2, ffn=32, dropout=0.0, text_dim=8)
    meta = dict(config=cfg.to_dict(), entities=list(ENTITIES), positions=list(POSITIONS), vocab_hash=vocab_hash(), kb_hash='x', text_model=str(tmp_path/'txt'),
                entity_emb=torch.randn(len(ENTITIES), 8), position_emb=torch.randn(len(POSITIONS), 8), image_size=32, mean=0.5, std=0.25)
    torch.save(dict(format='medklip-checkpoint-1', model=MedKLIP(cfg).state_dict(), meta=meta), tmp_path/'m.ckpt')
    assert main(['zeroshot', '--checkpoint', 'm.ckpt', '--dataset', 'mimic', '--root', 'mimic', '--split', 'all', '--val-split', 'none',
                 '--n-boot', '0', '--out', 'zs.json']) == 0
    assert _run(tmp_path/'r', 'reports=mimic/mimic-cxr-reports', 'triplets=t.jsonl', 'checkpoint=m.ckpt', 'dataset=mimic', 'data_root=mimic',
                'split=', 'zeroshot_metrics=zs.json', 'require_results=true') == 0
    nb = json.loads((tmp_path/'r'/'tutorial_zeroshot.ipynb').read_text())
    printed = ''.join(''.join(o.get('text', '')) for c in nb['cells'] for o in c.get('outputs', []))
    assert 'heatmaps are drawn without outlines' in printed and 'stand in' not in printed and 'zero-shot report: mimic' in printed
