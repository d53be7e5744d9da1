"MAVL-style aspect queries: labels from entity labels, the loss, geometric-mean scoring, prompt plumbing, the paper configuration and imported checkpoints."
import json
import numpy as np, pytest, torch
from medklip.core import MedklipError
from medklip.eval.infer import Query, query_set, resolve_query, run_query_set, score_images, prompt_list
from medklip.losses import exist_from_matrix, resolve_aux_losses, method_losses
from medklip.methods.aspects import aspect_targets, aspect_loss, aspect_score, aspect_heatmap, decode_aspects
from medklip.model import MedKLIP, MedKLIPConfig
from medklip.text.knowledge import load_knowledge
from medklip.vocab import ENTITIES, ENTITY_INDEX, POSITIONS, vocab_hash


def test_aspect_labels_from_three_entities():
    has = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 0.]])             # effusion: opacity+base; pneumothorax: lucency; nodule: opacity
    exist = torch.tensor([[1, 0, -1], [0, -1, -1], [-1, -1, 1], [-1, -1, -1], [0, 0, 0]])
    assert aspect_targets(exist, has).tolist() == [[1, 0, 1], [0, -1, 0], [1, -1, -1], [-1, -1, -1], [0, 0, 0]]


def test_aspect_labels_from_a_label_matrix():
    kb = load_knowledge()
    has = torch.tensor(kb.aspect_matrix(ENTITIES)).float()
    m = torch.full((1, len(POSITIONS), len(ENTITIES)), -1); m[0, 3, ENTITY_INDEX['effusion']] = 1; m[0, 0, ENTITY_INDEX['pneumothorax']] = 0
    t = aspect_targets(exist_from_matrix(m), has)[0]
    names = kb.aspect_names()
    assert t[names.index('shape: meniscus')] == 1 and t[names.index('density: lucency')] == 0 and t[names.index('shape: round')] == -1


def _tiny(text_dim=16, **kw):
    torch.manual_seed(0)
    return MedKLIP(MedKLIPConfig(**{**dict(backbone='tiny', image_size=32, d_model=32, layers=1, heads=2, ffn=64, dropout=0.0, text_dim=text_dim), **kw}))


def test_loss_gradient_reaches_the_aspect_queries():
    m, E = _tiny(), torch.randn(75, 16)
    A = torch.randn(5, 16, requires_grad=True)
    out = m(torch.randn(3, 3, 32, 32), E)
    lab = torch.full((3, 51, 75), -1); lab[0, 2, 0] = 1; lab[1, 2, 0] = 0
    has = torch.zeros(75, 5); has[0, [1, 3]] = 1
    name, loss = aspect_loss(dict(labels=lab, entity_emb=E, aspect_emb=A, entity_aspects=has), out, m)
    loss.backward()
    assert name == 'aspects' and torch.isfinite(loss) and loss > 0
    assert A.grad[[1, 3]].abs().sum() > A.grad[[0, 2, 4]].abs().sum() > 0   # labelled aspects get the loss, the others only through self-attention
    assert m.disease_embedding_layer.weight.grad.abs().sum() > 0 and m.backbone.embedder.embedder.convolution.weight.grad.abs().sum() > 0
    assert method_losses({'aspect_weight': 0.0}) == {} and resolve_aux_losses({'aspects': 2.0}) == [(aspect_loss, 2.0)]
    with pytest.raises(MedklipError, match='no aspects'):
        aspect_loss(dict(labels=lab, entity_emb=E, aspect_emb=torch.zeros(0, 16), entity_aspects=torch.zeros(75, 0)), out, m)


def test_paper_configuration_with_aspects():
    "resnet50, 768-d text, 256-d decoder: the aspect decode runs on the forward's features with the shared heads."
    torch.manual_seed(0)
    m = MedKLIP(MedKLIPConfig(image_size=64))
    out = m(torch.randn(2, 3, 64, 64), torch.randn(75, 768))
    logits = decode_aspects(m, out['feats'], torch.randn(75, 768), torch.randn(22, 768))
    assert logits.shape == (2, 22, 2) and torch.isfinite(logits).all()


def test_geometric_mean_scoring():
    p = np.array([[0.9, 0.8, 0.5], [0.9, 0.9, 0.001]])
    np.testing.assert_allclose(aspect_score(p), np.exp(np.log(p).mean(-1)))
    assert aspect_score(p)[1] < p[1].mean()                        # an AND: one absent aspect sinks the finding
    assert float(aspect_score(torch.tensor([0.0, 1.0]))) == pytest.approx(1e-3, rel=1e-3)   # floored, never -inf
    assert aspect_heatmap(np.ones((2, 3, 4, 5))).shape == (2, 4, 5)


def _meta(with_aspects=True):
    torch.manual_seed(1)
    kb = load_knowledge()
    meta = dict(entity_emb=torch.randn(75, 16), image_size=32, mean=0.5, std=0.25, text_model='none', entities=list(ENTITIES))
    if with_aspects:
        names = kb.aspect_names()
        meta.update(aspect_names=names, aspect_emb=torch.randn(len(names), 16), entity_aspects=torch.tensor(kb.aspect_matrix(ENTITIES)).float())
    return meta


def test_resolve_and_score_by_aspects():
    kb = load_knowledge()
    q = resolve_query('pneumoperitoneum', prompt='aspects')
    assert q.kind == 'aspects' and q.prompt == 'aspects' and q.aspects == tuple(kb.entry_aspects('pneumoperitoneum'))
    assert resolve_query('effusion', prompt='aspects').kind == 'aspects'          # seen findings can be asked by aspects too
    n = resolve_query('normal', prompt='aspects')
    assert n.kind == 'entity' and n.prompt == 'description'                     # no aspects: asked by its description, and says so
    assert prompt_list('all') == ['name', 'description', 'aspects'] and prompt_list('both') == ['name', 'description']
    with pytest.raises(MedklipError, match='prompt'): prompt_list('colour')
    meta, net = _meta(), _tiny()
    qs = query_set([q, resolve_query('effusion'), n], meta)
    imgs = np.random.default_rng(0).integers(0, 256, (2, 40, 40), dtype=np.uint8)
    s, a = score_images(net, imgs, qs, meta)
    assert s.shape == (2, 3) and a.shape[:2] == (2, 3)
    from medklip.model import preprocess
    with torch.inference_mode(): full_s, full_a = run_query_set(net, preprocess(torch.from_numpy(imgs), 32, 0.5, 0.25), qs)
    cols = [75 + meta['aspect_names'].index(x) for x in q.aspects]
    np.testing.assert_allclose(s[:, 0], np.exp(np.log(full_s[:, cols].numpy()).mean(-1)), rtol=1e-5)
    np.testing.assert_allclose(a[:, 0], full_a[:, cols].mean(1).numpy(), rtol=1e-5)
    # the aspect block is the trained convention: the same scores as a plain forward of [entities; aspects]
    with torch.inference_mode():
        o = net(preprocess(torch.from_numpy(imgs), 32, 0.5, 0.25), torch.cat([meta['entity_emb'], meta['aspect_emb']]))
    np.testing.assert_allclose(full_s[:, 75:].numpy(), o['logits'].softmax(-1)[..., 1][:, 75:].numpy(), rtol=1e-4, atol=1e-6)


def test_checkpoint_without_aspects_embeds_them_from_the_knowledge_base():
    "Imported or pre-aspects checkpoints: the aspect phrases are embedded now with the checkpoint's encoder, the whole vocabulary as one block."
    meta, calls = _meta(with_aspects=False), []
    def embed(texts): calls.append(list(texts)); return torch.randn(len(texts), 16)
    qs = query_set([resolve_query('pneumoperitoneum', prompt='aspects')], meta, embed)
    kb = load_knowledge()
    assert qs.aspect_names == kb.aspect_names() and calls == [kb.aspect_texts()] and qs.aspect.shape == (len(kb.aspect_names()), 16)
    s, _ = score_images(_tiny(), np.zeros((1, 32, 32), np.uint8) + np.arange(32, dtype=np.uint8), qs, meta)
    assert 0 < s[0, 0] < 1


def test_user_aspect_missing_from_checkpoint_is_embedded(tmp_path):
    f = tmp_path/'kb.yaml'
    f.write_text("aspects:\n  types:\n    texture: {honeycomb: clustered small air cysts}\n"
                 "extra:\n  ipf:\n    description: Idiopathic pulmonary fibrosis with coarse lines and honeycomb cysts at both bases.\n"
                 "    aspects: {texture: honeycomb, place: base}\n")
    kb, meta = load_knowledge(f), _meta()
    q = resolve_query('ipf', prompt='aspects', kb=kb)
    qs = query_set([q], meta, lambda t: torch.ones(len(t), 16), kb)
    assert qs.aspect_names[-1] == 'texture: honeycomb' and len(qs.aspect_names) == len(meta['aspect_names']) + 1
    assert qs.cols[0] == (75 + len(meta['aspect_names']), 75 + meta['aspect_names'].index('place: base'))


def test_imported_upstream_checkpoint_by_aspects(tmp_path):
    "An imported upstream checkpoint (aspects never trained) keeps working, and can still be asked by aspects."
    import warnings
    from PIL import Image
    from medklip.eval.infer import load_model
    from medklip.viz.overlay import run_heatmap
    from medklip.train import make_synthetic_corpus
    from medklip.upstream import fake_upstream_state_dict, import_upstream
    k = make_synthetic_corpus(tmp_path/'c', n=4, size=32, text_dim=16)/'knowledge'
    cfg = MedKLIPConfig(backbone='tiny', d_model=16, layers=2, heads=2, ffn=32, text_dim=16)
    torch.save({'model': fake_upstream_state_dict(cfg)}, tmp_path/'up.pth')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); import_upstream(tmp_path/'up.pth', k, tmp_path/'o', heads=2, log=lambda *a: None)
    mm = load_model(tmp_path/'o')
    assert 'aspect_names' not in mm[1] and 'methods' not in mm[1]
    Image.fromarray((np.arange(48 * 48).reshape(48, 48) % 253).astype(np.uint8)).save(tmp_path/'x.png')
    d = run_heatmap(tmp_path/'x.png', None, tmp_path/'d.png', entity='effusion', model_meta=mm)
    a = run_heatmap(tmp_path/'x.png', None, tmp_path/'a.png', entity='effusion', prompt='aspects', model_meta=mm,
                    embed=lambda t: torch.randn(len(t), 16, generator=torch.Generator().manual_seed(len(t))))
    assert isinstance(d, float) and isinstance(a, float) and (tmp_path/'a.png').exists()   # random upstream-shaped weights: scores need not be finite


def test_aspect_loss_after_a_bf16_autocast_forward():
    "As on a GPU with amp: the forward ran under bf16 autocast, the aux loss is called outside it; the aspect decode follows the features' dtype."
    m, E, A = _tiny(), torch.randn(75, 16), torch.randn(4, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16): out = m(torch.randn(2, 3, 32, 32), E)
    assert out['feats'].dtype == torch.bfloat16
    lab = torch.full((2, 51, 75), -1); lab[0, 1, 0] = 1
    has = torch.zeros(75, 4); has[0, 2] = 1
    _, loss = aspect_loss(dict(labels=lab, entity_emb=E, aspect_emb=A, entity_aspects=has), out, m)
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32 and m.classifier.weight.grad.abs().sum() > 0
