"The compositional demo world (demo_data.world: compositional): its invariants, its knowledge, its reports and a small corpus."
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medklip.core import MedklipError
from medklip.data.demo import DemoParams, demo_findings, demo_spec, generate_demo, write_report
from medklip.vocab import ENTITIES

W = 'compositional'
TYPES = ('density', 'shape', 'margin', 'place', 'size')


def _attrs(k): return demo_spec(W)['findings'][k]['attributes']
def _tuple(k): return tuple(sorted(_attrs(k).items()))


def test_world_size_and_attribute_coverage():
    "At least 24 seen findings, all MedKLIP entities; every attribute value a seen finding uses is carried by at least 3 of them."
    seen, unseen = demo_findings(seen=True, world=W), demo_findings(seen=False, world=W)
    assert len(seen) >= 24 and len(unseen) >= 3
    assert set(seen) <= set(ENTITIES)
    for t in TYPES:
        n = Counter(_attrs(k)[t] for k in seen if t in _attrs(k))
        assert n and min(n.values()) >= 3, (t, n)
    assert all(set(TYPES) <= set(_attrs(k)) for k in seen + unseen)    # every finding states every attribute type


def test_density_not_confounded_with_size():
    "Each density an unseen finding has is carried by seen findings of both sizes, so a density query cannot learn it as one size."
    seen, unseen = demo_findings(seen=True, world=W), demo_findings(seen=False, world=W)
    for d in {_attrs(u)['density'] for u in unseen}:
        assert {_attrs(k)['size'] for k in seen if _attrs(k)['density'] == d} == {'small', 'large'}, d


def test_each_finding_its_own_combination_and_unseen_ones_new():
    "No two findings share an attribute tuple; each unseen finding combines values that seen findings carry, in a combination none of them has."
    seen, unseen = demo_findings(seen=True, world=W), demo_findings(seen=False, world=W)
    tuples = [_tuple(k) for k in seen + unseen]
    assert len(set(tuples)) == len(tuples)
    for u in unseen:
        for t, val in _attrs(u).items():
            assert any(_attrs(k).get(t) == val for k in seen), (u, t, val)
        core = lambda k: tuple(_attrs(k)[t] for t in ('density', 'shape', 'place'))
        assert core(u) not in {core(k) for k in seen}, u                 # new even without margin and size


def test_every_finding_is_drawn_when_picked():
    """Each finding, seen or unseen, leaves a mask of at least 12 pixels (the size below which `render_image` drops it) in
    nearly every draw at the demo's image size, so no finding is silently rare: session 18 found tortuous aorta empty in
    4 of 5 draws (6 training positives instead of ~40) and mediastinal widening in 2 of 5."""
    from medklip.data.demo import draw_geometry, render_image
    spec = demo_spec(W)
    for k in demo_findings(world=W):
        drawn = 0
        for i in range(10):
            rng = np.random.default_rng([i, 7])
            _, _, d = render_image(rng, 256, 256, draw_geometry(rng), [(k, str(rng.choice(spec['findings'][k]['positions'])), False)], world=W)
            drawn += bool(d)
        assert drawn >= 9, (k, drawn)


def test_unseen_descriptions_name_no_seen_finding_and_copy_no_seen_text():
    "Each unseen finding's knowledge-base description uses no seen finding's name, term or alias and no 4-word run of a seen description."
    from medklip.eval.infer import resolve_query
    from medklip.text.knowledge import load_knowledge
    kb, spec = load_knowledge(), demo_spec(W)
    words = lambda t: re.findall(r"[a-z]+", t.lower())
    grams = lambda t, n=4: {tuple(words(t)[i:i + n]) for i in range(len(words(t)) - n + 1)}
    seen = demo_findings(seen=True, world=W)
    names = set()
    for k in seen:
        e = kb.find(k)
        names |= {k.replace('_', ' '), e.name.lower(), *(a.lower() for a in getattr(e, 'aliases', []) or []),
                  *(t.lower() for t in spec['findings'][k]['terms'])}
    for u in demo_findings(seen=False, world=W):
        q = resolve_query(u, 'demo', 'description')
        assert q.kind == 'extra' and q.text == kb.text(u)
        body = q.text.split(':', 1)[1].lower()                          # after its own "Name:"
        hits = [n for n in names if re.search(rf"\b{re.escape(n)}s?\b", body)]
        assert not hits, (u, hits)
        for k in seen: assert not grams(kb.text(k)) & grams(q.text), (u, k)


def test_report_terms_parse_to_their_entity():
    "The parser maps every term a report may use for a seen finding to that finding's entity, present and negated."
    from medklip.text.parse import ReportParser
    parser, spec = ReportParser(), demo_spec(W)
    for k in demo_findings(seen=True, world=W):
        for t in spec['findings'][k]['terms']:
            got = {(tr['entity'], tr['exist']) for tr in parser.parse(f"FINDINGS: There is {t}. IMPRESSION: {t[:1].upper() + t[1:]}.")}
            assert (k, 1) in got, (k, t, got)
            got = {(tr['entity'], tr['exist']) for tr in parser.parse(f"FINDINGS: No {t}. IMPRESSION: Normal chest.")}
            assert (k, 0) in got, (k, t, got)


def test_params_validate_and_keep_classic_manifests():
    with pytest.raises(MedklipError, match='world'): DemoParams(world='nope')
    with pytest.raises(MedklipError, match='exposure'): DemoParams(exposure=3)
    assert 'world' not in DemoParams().to_dict() and 'exposure' not in DemoParams().to_dict()
    assert DemoParams(world=W, exposure=.3).to_dict()['world'] == W
    with pytest.raises(MedklipError, match='unknown demo world'): demo_spec('nope')


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp('w') / 'demo'
    generate_demo(out, DemoParams(world=W, seed=5, n_patients=24, size=(96, 112), unseen_rate=1., exposure=.3))
    return out


def test_small_corpus_masks_labels_and_reports(corpus):
    "Every drawn finding has a non-empty mask inside the image; unseen findings are never reported and only outside train; labels agree with findings.csv."
    f, lab = pd.read_csv(corpus / 'demo/findings.csv'), pd.read_csv(corpus / 'demo/labels.csv')
    assert list(lab.columns[3:]) == demo_findings(world=W)
    assert (f.area > 0).all() and (f.x1 > f.x0).all() and (f.y1 > f.y0).all()
    un = f.finding.isin(demo_findings(seen=False, world=W))
    assert un.any() and (f[un].reported == 'never').all() and (f[un].split != 'train').all()
    assert set(f[~un].reported) <= {'present', 'uncertain', 'missed'}
    for _, r in f.iterrows(): assert lab.loc[lab.dicom_id == r.dicom_id, r.finding].item() == 1
    assert len(set(f.finding)) >= 15                                    # a small corpus already shows most findings


def test_reports_name_present_findings_by_term_and_words():
    "A report names what was found by one of its terms, sometimes with attribute words ({desc}); unseen findings never appear."
    from medklip.data.demo import draw_geometry, render_image
    spec, texts = demo_spec(W), []
    for i in range(30):
        rng = np.random.default_rng(i)
        fs = [('nodule', 'right_mid_lung', False), ('pneumoperitoneum', 'right_diaphragm', False), ('tube', 'stomach', False)]
        _, _, drawn = render_image(rng, 96, 96, draw_geometry(rng), fs, world=W)
        report, _ = write_report(rng, drawn, .5, world=W)
        texts.append(report.lower())
        assert {d['finding']: d['reported'] for d in drawn}['pneumoperitoneum'] == 'never'
    all_text = ' '.join(texts)
    assert 'pneumoperitoneum' not in all_text and 'free air' not in all_text
    assert any(t in all_text for t in spec['findings']['nodule']['terms'])
    assert any(w in all_text for w in spec['words']['noun']['round'])     # the attribute phrasing is used too


def test_corpus_redrawn_when_its_generator_changes(corpus):
    "A corpus counts as complete only when drawn by this code from these world files (a local marker DVC ignores)."
    from medklip.data.demo import GENERATOR_FILE, _generator_hash, _is_complete
    p = DemoParams(world=W, seed=5, n_patients=24, size=(96, 112), unseen_rate=1., exposure=.3)
    marker = corpus / GENERATOR_FILE
    assert marker.read_text().strip() == _generator_hash() and _is_complete(corpus, p)
    try:
        marker.write_text('0' * 16 + '\n')               # as if the renderer or a world file had been edited since
        assert not _is_complete(corpus, p)
        marker.unlink()                                  # a corpus from before the marker existed
        assert not _is_complete(corpus, p)
    finally: marker.write_text(_generator_hash() + '\n')
    assert GENERATOR_FILE in (Path(__file__).parents[1] / '.dvcignore').read_text().split()
