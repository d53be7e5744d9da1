"Upstream MedKLIP checkpoint import and the pretrained-weights registry."
import functools, hashlib, http.server, threading, warnings
from pathlib import Path

import pytest
import torch

from medklip.core import MedklipError
from medklip.upstream import import_upstream, import_upstream_cli, get_pretrained, list_pretrained, read_upstream, map_upstream_key
from medklip.train import make_synthetic_corpus, load_checkpoint


def _fake_from_tsv(tsv: Path, seed=0) -> dict:
    "Random tensors for every key and shape listed in the upstream TSV, with the DataParallel prefix."
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for line in tsv.read_text().splitlines():
        if not line.strip() or line.startswith('#'): continue
        key, shape, dtype = line.split('\t')
        dims = () if shape == 'scalar' else tuple(int(x) for x in shape.split('x'))
        if dtype == 'int64': v = torch.randint(0, 1000, dims, generator=g)
        elif key.endswith('running_var'): v = torch.rand(dims, generator=g) + 0.5
        else: v = (torch.rand(dims, generator=g) - 0.5) * 0.05   # small, so a forward pass stays finite
        sd['module.' + key] = v
    return sd


@pytest.fixture(scope='module')
def upstream_sd(shared_dir):
    return _fake_from_tsv(shared_dir/'upstream_medklip_state_dict.tsv')


@pytest.fixture(scope='module')
def knowledge768(tmp_path_factory):
    root = make_synthetic_corpus(tmp_path_factory.mktemp('k'), n=4, size=32, text_dim=768)
    return root/'knowledge'


def test_import_real_key_list(upstream_sd, tmp_path, knowledge768):
    sd = upstream_sd
    assert len(sd) > 300
    torch.save({'model': sd, 'optimizer': {}, 'epoch': 99}, tmp_path/'up.pth')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        meta = import_upstream(tmp_path/'up.pth', knowledge768, tmp_path/'out', log=lambda *a: None)
    assert any('Bio_ClinicalBERT' in str(x.message) for x in w)
    assert meta['source']['n_mapped'] == len(sd) and meta['source']['kind'] == 'upstream-medklip'
    model, m2 = load_checkpoint(tmp_path/'out')
    c = m2['config']
    assert (c['backbone'], c['d_model'], c['layers'], c['ffn'], c['text_dim']) == ('resnet50', 256, 4, 1024, 768)
    ours = model.state_dict()
    pairs = {
        'res_features.0.weight': 'backbone.embedder.embedder.convolution.weight',
        'res_features.1.running_var': 'backbone.embedder.embedder.normalization.running_var',
        'res_features.4.0.downsample.0.weight': 'backbone.stages.0.layers.0.shortcut.convolution.weight',
        'res_features.5.2.conv2.weight': 'backbone.stages.1.layers.2.layer.1.convolution.weight',
        'res_features.6.5.bn3.bias': 'backbone.stages.2.layers.5.layer.2.normalization.bias',
        'res_features.6.0.downsample.1.num_batches_tracked': 'backbone.stages.2.layers.0.shortcut.normalization.num_batches_tracked',
        'res_l1.weight': 'res_l1.weight', 'decoder.layers.3.norm2.weight': 'decoder.layers.3.norm2.weight',
        'classifier.bias': 'classifier.bias', 'cl_fc.weight': 'cl_fc.weight',
    }
    for up, mine in pairs.items(): assert torch.equal(ours[mine], sd['module.' + up]), up
    # every upstream tensor landed somewhere, each exactly once
    for k, v in sd.items():
        assert torch.equal(ours[map_upstream_key(k[len('module.'):])[0]], v), k
    with torch.no_grad():
        o = model(torch.randn(1, 3, 224, 224), m2['entity_emb'])
    assert o['logits'].shape == (1, 75, 2) and o['attn'].shape == (1, 75, 14, 14) and torch.isfinite(o['logits']).all()


def test_import_errors(upstream_sd, tmp_path, knowledge768):
    sd = upstream_sd
    bad = dict(sd); bad['module.mystery.weight'] = torch.zeros(2); del bad['module.res_l2.bias']
    bad['module.classifier.weight'] = torch.zeros(3, 256)
    torch.save({'model': bad}, tmp_path/'bad.pth')
    with pytest.raises(MedklipError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore"); import_upstream(tmp_path/"bad.pth", knowledge768, tmp_path/"o", log=lambda *a: None)
    msg = str(e.value)
    assert 'mystery.weight' in msg and 'res_l2.bias' in msg and 'classifier.weight' in msg
    # text-side keys are ignored on purpose, with a reason
    ok = dict(sd); ok['module.bert_model.embeddings.word_embeddings.weight'] = torch.zeros(2, 2)
    torch.save({'model': ok}, tmp_path/'bert.pth')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        meta = import_upstream(tmp_path/'bert.pth', knowledge768, tmp_path/'o2', log=lambda *a: None)
    assert meta['source']['ignored'][0]['key'].startswith('bert_model') and 'knowledge' in meta['source']['ignored'][0]['reason']


def test_knowledge_dim_mismatch(upstream_sd, tmp_path):
    k32 = make_synthetic_corpus(tmp_path/'c', n=4, size=32, text_dim=32)/'knowledge'
    torch.save({'model': upstream_sd}, tmp_path/'up.pth')
    with pytest.raises(MedklipError, match='768'): import_upstream(tmp_path/'up.pth', k32, tmp_path/'o', log=lambda *a: None)


def test_advice_names_flags_that_exist(upstream_sd, tmp_path, capsys):
    "The `medklip embed-knowledge ...` that the dimension error advises uses only that command's own flags."
    import re
    from medklip.text.embed import embed_knowledge_cli
    k32 = make_synthetic_corpus(tmp_path/'c', n=4, size=32, text_dim=32)/'knowledge'
    torch.save({'model': upstream_sd}, tmp_path/'up.pth')
    with pytest.raises(MedklipError) as e: import_upstream(tmp_path/'up.pth', k32, tmp_path/'o', log=lambda *a: None)
    advised = re.search(r"`medklip embed-knowledge ([^`]*)`", str(e.value)).group(1)
    with pytest.raises(SystemExit): embed_knowledge_cli(['--help'])
    usage = capsys.readouterr().out
    flags = re.findall(r"--[a-z-]+", advised)
    assert flags and all(re.search(rf"(?<![\w-]){f}\b", usage) for f in flags), (flags, usage)


class _Cfg:  # an object torch.load(weights_only=True) refuses
    lr = 1e-4

def test_pickle_needs_trust(tmp_path):
    torch.save({'model': {'module.res_l1.weight': torch.zeros(1)}, 'config': _Cfg()}, tmp_path/'p.pth')
    with pytest.raises(MedklipError, match='--trust-pickle'): read_upstream(tmp_path/'p.pth')
    sd, rest = read_upstream(tmp_path/'p.pth', trust_pickle=True)
    assert list(sd) == ['res_l1.weight'] and 'config' in rest


def test_cli(tmp_path):
    from medklip.model import MedKLIPConfig
    from medklip.upstream import fake_upstream_state_dict
    k = make_synthetic_corpus(tmp_path/'c', n=4, size=32, text_dim=16)/'knowledge'
    cfg = MedKLIPConfig(backbone='tiny', d_model=16, layers=1, heads=2, ffn=32, text_dim=16)
    torch.save({'model': fake_upstream_state_dict(cfg)}, tmp_path/'up.pth')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert import_upstream_cli([str(tmp_path/'up.pth'), '--out', str(tmp_path/'o'), '--knowledge', str(k), '--heads', '2']) == 0
    assert load_checkpoint(tmp_path/'o')[1]['config']['heads'] == 2


# registry: a local HTTP server on 127.0.0.1, never the real network
@pytest.fixture()
def server(tmp_path):
    (tmp_path/'www').mkdir()
    (tmp_path/'www'/'w.bin').write_bytes(b'weights' * 100)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path/'www'))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown(); srv.server_close()


def _registry(path, url, sha):
    path.write_text(f"good:\n  url: {url}/w.bin\n  sha256: {sha}\n  format: medklip\n"
                    f"wrong:\n  url: {url}/w.bin\n  sha256: {'0' * 64}\n"
                    f"nohash:\n  url: {url}/w.bin\n  sha256: null\n"
                    f"gone:\n  url: http://127.0.0.1:9/w.bin\n  sha256: {sha}\n")
    return path


def test_registry_download(tmp_path, server):
    sha = hashlib.sha256(b'weights' * 100).hexdigest()
    reg = _registry(tmp_path/'r.yaml', server, sha)
    assert [e['name'] for e in list_pretrained(reg)] == ['good', 'wrong', 'nohash', 'gone']
    p = get_pretrained('good', tmp_path/'cache', reg)
    assert p.read_bytes() == b'weights' * 100 and p.parent.name == 'good'
    assert get_pretrained('good', tmp_path/'cache', reg) == p   # cached
    with pytest.raises(MedklipError, match='sha256'): get_pretrained('wrong', tmp_path/'cache', reg)
    assert not (tmp_path/'cache'/'wrong'/'w.bin').exists() and not list((tmp_path/'cache'/'wrong').glob('*.part'))
    with pytest.raises(MedklipError, match='no sha256'): get_pretrained('nohash', tmp_path/'cache', reg)
    with pytest.warns(UserWarning, match='UNVERIFIED'): assert get_pretrained('nohash', tmp_path/'cache', reg, allow_unverified=True).exists()
    with pytest.raises(MedklipError, match='offline'): get_pretrained('gone', tmp_path/'cache', reg, timeout=5)
    with pytest.raises(MedklipError, match='no pretrained entry'): get_pretrained('nope', tmp_path/'cache', reg)


def test_packaged_registry():
    e = {x['name']: x for x in list_pretrained()}['medklip-upstream']
    assert e['sha256'] is None and e['text_model'] == 'emilyalsentzer/Bio_ClinicalBERT' and e['text_dim'] == 768


def test_imported_checkpoint_uses_upstream_preprocessing(tmp_path):
    "Imported weights: per-channel ImageNet mean/std on the RGB-replicated image after a plain resize to 224 (pinned), last-4-layer heatmaps."
    import numpy as np
    from PIL import Image
    from medklip.eval.infer import load_model
    from medklip.viz.overlay import run_heatmap
    from medklip.model import MedKLIPConfig, input_stats, preprocess
    from medklip.upstream import fake_upstream_state_dict
    k = make_synthetic_corpus(tmp_path/'c', n=4, size=32, text_dim=16)/'knowledge'
    cfg = MedKLIPConfig(backbone='tiny', d_model=16, layers=5, heads=2, ffn=32, text_dim=16)
    torch.save({'model': fake_upstream_state_dict(cfg)}, tmp_path/'up.pth')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); import_upstream(tmp_path/'up.pth', k, tmp_path/'o', heads=2, log=lambda *a: None)
    model, meta = load_model(tmp_path/'o')
    assert meta['mean'] == [0.485, 0.456, 0.406] and meta['std'] == [0.229, 0.224, 0.225]
    assert meta['config']['heatmap_layers'] == 4 and model.config.heatmap_layers == 4
    # a known image: 448×448, left half a 0/255 checkerboard (→ 127.5 after the 2× resize), right half white
    img = np.zeros((448, 448), np.uint8); img[::2, ::2] = img[1::2, 1::2] = 255; img[:, 224:] = 255
    Image.fromarray(img).save(tmp_path/'x.png')
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    run_heatmap(tmp_path/'x.png', None, tmp_path/'h.png', entity='effusion', model_meta=(model, meta))
    x = seen[0]
    assert x.shape == (1, 3, 224, 224)
    want_grey = torch.tensor([(0.5 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0.5 - 0.406) / 0.225])
    want_white = torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])   # 2.2489, 2.4286, 2.6400
    assert torch.allclose(x[0, :, 50, 50], want_grey, atol=1e-5) and torch.allclose(x[0, :, 50, 180], want_white, atol=1e-5)
    assert torch.allclose(x, preprocess(torch.from_numpy(img)[None], 224, *input_stats(meta)))
    # the old single grey mean/std (0.449/0.226) would be 0.19 off on white pixels of the blue channel
    assert abs(float(want_white[2]) - (1 - 0.449) / 0.226) > 0.19
    # heatmap = mean of the last 4 of the 5 decoder layers' cross-attention (on freshly initialised weights of the
    # imported config: the fake upstream tensors are uniform in [0.5, 1.5] and overflow a deep forward pass)
    from medklip.model import MedKLIP
    torch.manual_seed(0); model = MedKLIP(model.config).eval(); x = torch.randn(1, 3, 224, 224)
    for l in model.decoder.layers: torch.nn.init.normal_(l.multihead_attn.in_proj_weight, 0, 1)   # peaked attention, different per layer
    with torch.no_grad():
        mem, hw = model.patches(x)
        q = model.disease_embedding_layer(meta['entity_emb']).unsqueeze(0)
        _, ws = model.decoder(q, mem)
        out = model(x, meta['entity_emb'])
    assert torch.allclose(out['attn'].flatten(-2), torch.stack(ws[1:]).mean(0), atol=1e-6)
    assert not torch.allclose(out['attn'].flatten(-2), torch.stack(ws).mean(0), atol=1e-6)


def test_finetuning_an_imported_trunk_keeps_upstream_normalisation(tmp_path):
    from medklip.finetune import load_trunk
    from medklip.model import MedKLIPConfig
    from medklip.upstream import fake_upstream_state_dict
    k = make_synthetic_corpus(tmp_path/'c', n=4, size=32, text_dim=16)/'knowledge'
    torch.save({'model': fake_upstream_state_dict(MedKLIPConfig(backbone='tiny', d_model=16, layers=1, heads=2, ffn=32, text_dim=16))}, tmp_path/'up.pth')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); import_upstream(tmp_path/'up.pth', k, tmp_path/'o', heads=2, log=lambda *a: None)
    _, origin = load_trunk('pretrained', tmp_path/'o')
    assert origin['mean'] == (0.485, 0.456, 0.406) and origin['std'] == (0.229, 0.224, 0.225)
    _, own = load_trunk('pretrained', _own_ckpt(tmp_path))
    assert 'mean' not in own            # a checkpoint trained here: fine-tuning normalises with the store's grey statistics


def _own_ckpt(tmp_path):
    from medklip.train import pretrain
    root = make_synthetic_corpus(tmp_path/'own', n=12, size=32, text_dim=16)
    pretrain(root/'store', root/'triplets.jsonl', root/'knowledge', tmp_path/'own_out',
             dict(backbone='tiny', image_size=32, d_model=16, layers=1, heads=2, ffn=32, batch_size=4, epochs=1, workers=0, warmup_steps=1),
             log=lambda *a: None)
    return tmp_path/'own_out'
