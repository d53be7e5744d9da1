"Report parser: negation/uncertainty/position phenomena, label matrix, CLI contract, MIMIC folder input."
import json
from pathlib import Path
import numpy as np
import pytest
from medklip.core import MedklipError
from medklip.vocab import ENTITY_INDEX, POSITION_INDEX
from medklip.text.parse import ReportParser, label_matrix, exist_vector
from medklip.text.backends import parse_reports_cli

@pytest.fixture(scope='module')
def rp(): return ReportParser()

def ex(rp, text): return {(t['entity'], t['exist']) for t in rp.parse(text)}
def pos(rp, text, entity): return {t['position'] for t in rp.parse(text) if t['entity'] == entity}

@pytest.mark.parametrize('text,entity,exist', [
    ('No effusion or pneumothorax.', 'pneumothorax', 0),
    ('No effusion or pneumothorax.', 'effusion', 0),
    ('Without evidence of pneumonia.', 'pneumonia', 0),
    ('Lungs are free of consolidation.', 'consolidation', 0),
    ('Negative for pneumothorax.', 'pneumothorax', 0),
    ('The left effusion has resolved.', 'effusion', 0),
    ('The pneumothorax is no longer seen.', 'pneumothorax', 0),
    ('Opacity may represent pneumonia.', 'pneumonia', -1),
    ('Opacity may represent pneumonia.', 'opacity', 1),
    ('Possible small effusion.', 'effusion', -1),
    ('Pneumonia cannot be excluded.', 'pneumonia', -1),
    ('Findings suggestive of edema.', 'edema', -1),
    ('Atelectasis versus pneumonia.', 'atelectasis', -1),
    ('Early infiltrate is not excluded.', 'infiltrate', -1),       # double negation -> uncertain
    ('Unchanged left pleural effusion.', 'effusion', 1),
    ('No change in the small effusion.', 'effusion', 1),          # pseudo-negation
    ('No edema, but there is a small pneumothorax.', 'pneumothorax', 1),  # scope ends at "but"
    ('No edema; small pneumothorax.', 'pneumothorax', 1),
    ('There are no XXXX of a pleural effusion.', 'effusion', 0),  # de-identification token
    ('Small left pleural effusion.', 'effusion', 1),
    ('Heart size is enlarged.', 'cardiomegaly', 1),
    ('Free air beneath the right hemidiaphragm.', 'air', 1),
    ('Cannot exclude early consolidation at the left base.', 'consolidation', -1),
    ('Interval opacification of the left base.', 'opacity', 1),
    ('Small right hydropneumothorax.', 'pneumothorax', 1),
    ('Pacer leads in place.', 'pacemaker', 1),
    ('Findings concerning for infectious process.', 'pneumonia', -1),
    ('Interstitial fibrosis.', 'tail_abnorm_obs', 1),
    ('Small pneumothroax on the left.', 'pneumothorax', 1),        # misspelling, fuzzy match
    ('Kleine Pleuraergüsse; small effusion noted — stable.', 'effusion', 1),  # non-ASCII text
])
def test_exist(rp, text, entity, exist):
    assert (entity, exist) in ex(rp, text)

@pytest.mark.parametrize('text,entity,positions', [
    ('Bilateral lower lobe opacities.', 'opacity', {'lower_left_lobe', 'lower_right_lobe'}),
    ('Bibasilar atelectasis.', 'atelectasis', {'lung_bases'}),
    ('Blunting of the left costophrenic angle.', 'blunt', {'left_costophrenic'}),
    ('Retrocardiac opacity.', 'opacity', {'retrocardiac'}),
    ('Right upper lobe consolidation.', 'consolidation', {'upper_right_lobe'}),
    ('No pneumothorax.', 'pneumothorax', {'unspecified'}),
    ('Degenerative changes of the shoulder.', 'degenerative', {'other'}),
    ('Small left pleural effusion and right lower lobe opacity.', 'opacity', {'lower_right_lobe'}),
])
def test_positions(rp, text, entity, positions):
    assert pos(rp, text, entity) == positions

def test_sections_and_empty(rp):
    assert rp.parse({'indication': 'Evaluate for pneumonia.', 'findings': 'Lungs are clear.'}) == \
        [dict(entity='clear', position='pulmonary', exist=1)]
    assert rp.parse('INDICATION: cough, r/o pneumonia.\nIMPRESSION: No effusion.') == \
        [dict(entity='effusion', position='pleural_unspec', exist=0)]
    assert rp.parse({'findings': None, 'impression': float('nan')}) == []
    assert rp.parse('') == []

def test_spacy_backend_and_missing_model():
    sp = ReportParser(backend='spacy')
    assert ('pneumothorax', 0) in {(t['entity'], t['exist']) for t in sp.parse('Lungs clear. No pneumothorax.')}
    with pytest.raises(MedklipError, match='not installed'): ReportParser(backend='spacy', model='en_core_sci_absent')
    with pytest.raises(MedklipError): ReportParser(backend='nope')

def test_label_matrix_rules():
    m = label_matrix([dict(entity='effusion', position='left_pleural', exist=0),
                      dict(entity='effusion', position='left_pleural', exist=1),   # positive wins
                      dict(entity='effusion', position='right_pleural', exist=0),
                      dict(entity='edema', position='unspecified', exist=0),
                      dict(entity='edema', position='unspecified', exist=-1),      # uncertain leaves -1 / never overrides
                      dict(entity='opacity', position='retrocardiac', exist=-1)])
    assert m.shape == (51, 75) and m.dtype == np.int8
    e, p = ENTITY_INDEX, POSITION_INDEX
    assert m[p['left_pleural'], e['effusion']] == 1 and m[p['right_pleural'], e['effusion']] == 0
    assert m[p['unspecified'], e['edema']] == 0 and m[p['retrocardiac'], e['opacity']] == -1
    assert (m != -1).sum() == 3
    v = exist_vector(m)
    assert v.shape == (75,) and v.dtype == np.int8
    assert (v[e['effusion']], v[e['edema']], v[e['opacity']], v[e['mass']]) == (1, 0, -1, -1)

def test_cli_csv_bad_row_and_atomic(tmp_path, capsys):
    src = tmp_path/'r.csv'
    src.write_text('study_id,findings,impression\n1,Small left pleural effusion.,No pneumothorax.\n,Edema.,\n3,,Normal.\n')
    out, stats = tmp_path/'o.jsonl', tmp_path/'s.json'
    assert parse_reports_cli([str(src), '--id-col', 'study_id', '--text-cols', 'findings', 'impression',
                              '--out', str(out), '--stats', str(stats), '--workers', '2', '--quiet']) == 0
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert [l['study_id'] for l in lines] == ['1', '3']
    assert {'entity': 'effusion', 'position': 'left_pleural', 'exist': 1} in lines[0]['triplets']
    st = json.loads(stats.read_text())
    assert st['n_errors'] == 1 and st['errors'][0]['line'] == 3 and st['entities']['pneumothorax']['0'] == 1
    assert 'r.csv line 3' in capsys.readouterr().err
    assert not list(tmp_path.glob('.o.jsonl.*'))  # no temporary file left behind

def test_cli_missing_column_keeps_old_output(tmp_path):
    src = tmp_path/'r.csv'; src.write_text('id,text\n1,No effusion.\n')
    out = tmp_path/'o.jsonl'; out.write_text('old\n')
    with pytest.raises(MedklipError, match='missing column'):
        parse_reports_cli([str(src), '--out', str(out), '--workers', '1', '--quiet'])
    assert out.read_text() == 'old\n'

def test_cli_mimic_folder(tmp_path):
    d = tmp_path/'mimic-cxr-reports/files/p10/p10000032'; d.mkdir(parents=True)
    (d/'s50414267.txt').write_text('FINAL REPORT\nINDICATION: ___ with cough, eval pneumonia.\n\n'
                                   'FINDINGS: Small right pleural effusion.\n\nIMPRESSION: No pneumothorax.\n')
    out = tmp_path/'o.jsonl'
    assert parse_reports_cli([str(tmp_path/'mimic-cxr-reports'), '--out', str(out), '--workers', '1', '--quiet']) == 0
    (line,) = [json.loads(l) for l in out.read_text().splitlines()]
    assert line['study_id'] == '50414267'
    trips = {(t['entity'], t['position'], t['exist']) for t in line['triplets']}
    assert trips == {('effusion', 'right_pleural', 1), ('pneumothorax', 'unspecified', 0)}

def test_iu_bench_smoke(shared_dir, tmp_path):
    "A quick look at IU X-ray: a few hundred reports give a sane number of positive triplets."
    import csv
    rows = list(csv.DictReader(open(shared_dir/'data/iu_xray/reports.csv', newline='', encoding='utf-8')))[:200]
    rp = ReportParser()
    pos_ = sum(t['exist'] == 1 for r in rows for t in rp.parse({'findings': r['findings'], 'impression': r['impression']}))
    assert pos_ > 100


# --- radiological equivalences, scope rules and the hedging option (IU X-ray error analysis) ---
@pytest.mark.parametrize('text,entity,exist', [
    ('Right chest XXXX tip is visualized in the distal SVC.', 'catheter', 1),    # a tip in the SVC is a central line
    ('Left chest port with tip at the cavoatrial junction.', 'catheter', 1),
    ('Complete collapse of the left lung.', 'atelectasis', 1),                   # lung collapse = atelectasis
    ('Collapsed right middle lobe.', 'atelectasis', 1),
    ('Mild unfolding of the thoracic aorta.', 'tortuous', 1),
    ('The aorta is ectatic.', 'tortuous', 1),
    ('Pulmonary venous engorgement.', 'congestion', 1),
    ('Mild vascular cephalization.', 'congestion', 1),
    ('Increased pulmonary vascularity.', 'congestion', 1),
    ('Borderline heart size.', 'cardiomegaly', 1),
    ('Stable bilateral apical pleural capping.', 'thicken', 1),
    ('Stable wedging of a thoracic vertebral body.', 'deformity', 1),
    ('Pectus excavatum.', 'deformity', 1),
    ('Pulmonary vascular engorgement appears within limits of normal.', 'congestion', 0),  # post negation
    ('No masses or suspicious nodules.', 'nodule', 0),             # hedge adjective inside a negated list
    ('Nodules are smaller and not definitely seen.', 'nodule', 0),
    ('Note that fractures may not be demonstrated.', 'fracture', -1),  # disclaimer
    ('Correlate clinically for pneumonia.', 'pneumonia', -1),
    ('In the appropriate clinical setting this is compatible with pneumonia.', 'pneumonia', -1),
    ('Essentially resolved bibasilar atelectasis.', 'atelectasis', 0),  # "resolved" before the finding negates it too
    ('Age-indeterminate wedging of a midthoracic vertebral body.', 'deformity', 1),  # hedges the age, not the finding
    ('Age indeterminate fracture of the right 9th rib.', 'fracture', 1),
    ('Indeterminate nodule in the right upper lobe.', 'nodule', 1),   # an indeterminate nodule is a nodule of undetermined nature
])
def test_equivalences_and_scope(rp, text, entity, exist):
    assert (entity, exist) in ex(rp, text)

@pytest.mark.parametrize('text,entity', [
    ('Residuals of prior granulomatous infection.', 'pneumonia'),  # old granulomatous disease is not pneumonia
    ('Collapse of the T7 vertebral body.', 'atelectasis'),         # vertebral collapse is not atelectasis
    ('Suspicious nodule, no mass.', 'nodule'),                     # the comma ends the negated list: stays hedged
])
def test_no_false_equivalence(rp, text, entity):
    assert (entity, 1) not in ex(rp, text) and (entity, 0) not in ex(rp, text)

def test_heart_within_normal_limits_keeps_normal(rp):
    assert ('normal', 1) in ex(rp, 'Heart size within normal limits.')

def test_uncertain_as(rp):
    txt = 'Atelectasis versus scarring. No effusion.'
    assert ex(rp, txt) == {('atelectasis', -1), ('scar', -1), ('effusion', 0)}      # faithful default
    assert ex(ReportParser(uncertain_as=1), txt) == {('atelectasis', 1), ('scar', 1), ('effusion', 0)}
    with pytest.raises(MedklipError, match='uncertain_as'): ReportParser(uncertain_as=2)

def test_cli_uncertain_as(tmp_path):
    src = tmp_path/'r.csv'; src.write_text('study_id,findings,impression\n1,Atelectasis versus scarring.,\n')
    assert parse_reports_cli([str(src), '--out', str(tmp_path/'o.jsonl'), '--workers', '1', '--quiet', '--uncertain-as', '1']) == 0
    assert {t['exist'] for t in json.loads((tmp_path/'o.jsonl').read_text())['triplets']} == {1}

# --- leaning hedges (probable_as), two-word frames, implication blockers, vocabulary choices -------------------
@pytest.fixture(scope='module')
def rp1(): return ReportParser(probable_as=1)

@pytest.mark.parametrize('text,entity,default,leaning1', [
    ('Probable left basilar atelectasis.', 'atelectasis', -1, 1),
    ('Bibasilar atelectasis versus scarring.', 'atelectasis', -1, 1),     # each alternative of an unhedged differential
    ('Bibasilar atelectasis versus scarring.', 'scar', -1, 1),
    ('Mild scarring and/or atelectasis in the lung bases.', 'atelectasis', -1, 1),
    ('Opacity most XXXX representing atelectasis.', 'atelectasis', -1, 1),  # de-identified "most likely"
    ('Airspace disease which may represent atelectasis versus infiltrate.', 'infiltrate', -1, -1),  # weaker hedge wins
    ('Airspace disease which may represent atelectasis versus infiltrate.', 'atelectasis', -1, -1),
    ('Question left basilar atelectasis versus infiltrate.', 'infiltrate', -1, -1),
    ('Atelectasis versus pneumonia cannot be excluded.', 'atelectasis', -1, -1),
    ('No effusion and/or pneumothorax.', 'pneumothorax', 0, 0),           # inside a negated list
    ('Possible small effusion.', 'effusion', -1, -1),                      # plain hedges are untouched
])
def test_probable_as(rp, rp1, text, entity, default, leaning1):
    assert (entity, default) in ex(rp, text)
    assert (entity, leaning1) in ex(rp1, text)

@pytest.mark.parametrize('text,entity,exist', [
    ('The heart is slightly large.', 'cardiomegaly', 1),
    ('The heart is not large.', 'cardiomegaly', 0),
    ('Prominence of the central pulmonary vasculature.', 'congestion', 1),
    ('Pulmonary vascularity is prominent.', 'congestion', 1),
    ('No prominent pulmonary vasculature.', 'congestion', 0),
    ('Contour irregularity of the right 7th rib.', 'deformity', 1),
    ('Mild loss of height of the T7 vertebral body.', 'deformity', 1),
    ('Dense nodule in the right lower lobe.', 'density', 1),
    ('Arthritic changes of the spine.', 'tail_abnorm_obs', 1),
    ('Atherosclerotic calcification of the aorta.', 'tail_abnorm_obs', 1),
    ('Aortic calcification.', 'calcification', 1),
    ('Central venous catheter tip in the right atrium.', 'catheter', 1),
    ('Large lung volumes.', 'hyperinflate', 1),
])
def test_frames_and_terms(rp, text, entity, exist):
    assert (entity, exist) in ex(rp, text)

@pytest.mark.parametrize('text,entity', [
    ('Heart size is mildly enlarged, pulmonary vascularity within normal limits.', 'congestion'),  # comma: two clauses
    ('Pacemaker leads with tips in the right atrium and right ventricle.', 'catheter'),  # leads, not a catheter
    ('Arthritic changes of the spine.', 'degenerative'),
    ('Atherosclerotic calcification of the aorta.', 'calcification'),
    ('Bullae in both upper lobes.', 'emphysema'),
    ('Cardiomegaly and pulmonary venous hypertension.', 'density'),  # no fuzzy match of hypertension to hyperdense
])
def test_frames_and_terms_absent(rp, text, entity):
    assert entity not in {e for e, _ in ex(rp, text)}

def test_probable_as_validated_and_cli(tmp_path):
    with pytest.raises(MedklipError, match='probable_as'): ReportParser(probable_as=2)
    src = tmp_path/'r.csv'; src.write_text('study_id,findings,impression\n1,Probable atelectasis.,\n')
    out = tmp_path/'o.jsonl'
    assert parse_reports_cli([str(src), '--out', str(out), '--workers', '1', '--quiet', '--probable-as', '1']) == 0
    assert json.loads(out.read_text())['triplets'] == [dict(entity='atelectasis', position='unspecified', exist=1)]

def test_bad_frames_file_names_the_file(monkeypatch, tmp_path):
    import medklip.text.parse as P
    bad = tmp_path/'parse_frames.tsv'; bad.write_text('notanentity\tlarge\theart\t4\n')
    real = P.resource_path
    monkeypatch.setattr(P, 'resource_path', lambda name: bad if name == 'parse_frames.tsv' else real(name))
    P.load_frames.cache_clear()
    try:
        with pytest.raises(MedklipError, match='parse_frames.tsv.*unknown entity'): P.load_frames()
    finally:
        monkeypatch.undo(); P.load_frames.cache_clear()

@pytest.mark.parametrize('text,entity,exist', [
    ('Correlate clinically with history of fracture.', 'fracture', -1),   # a past condition, not this image
    ('CT could be performed to identify a small nodule.', 'nodule', -1),  # purpose
    ('Limited exam for evaluation of fractures.', 'fracture', -1),
    ('Previously noted nodule is not well seen on today\'s study.', 'nodule', 0),
])
def test_history_purpose_cues(rp, text, entity, exist):
    assert (entity, exist) in ex(rp, text)

def _linked_pipeline():
    "A blank pipeline whose entity ruler finds 'hydropleura' and a stand-in for scispacy's linker that links it to Pleural effusion."
    import spacy
    from spacy.language import Language
    from spacy.tokens import Span
    from types import SimpleNamespace
    import scispacy.abbreviation  # noqa: F401  (registers abbreviation_detector)
    Span.set_extension('kb_ents', default=[], force=True)
    concept = SimpleNamespace(canonical_name='Hydropleura disorder', aliases=['Pleural effusion', 'Fluid in chest'])
    kb = SimpleNamespace(cui_to_entity={'C0000001': concept})

    class FakeLinker:
        def __init__(self): self.kb = kb
        def __call__(self, doc):
            for e in doc.ents: e._.kb_ents = [('C0000001', 0.93)]
            return doc
    if 'fake_scispacy_linker' not in Language.factories:
        Language.factory('fake_scispacy_linker')(lambda nlp, name: FakeLinker())
    nlp = spacy.blank('en'); nlp.add_pipe('sentencizer')
    nlp.add_pipe('entity_ruler').add_patterns([{'label': 'ENTITY', 'pattern': 'hydropleura'}])
    nlp.add_pipe('abbreviation_detector')
    nlp.add_pipe('fake_scispacy_linker', name='scispacy_linker')
    return nlp

def test_linker_rewrites_linked_spans_to_vocabulary_terms():
    nlp = _linked_pipeline()
    linked = ReportParser(backend='spacy', nlp=nlp)
    assert ('effusion', 1) in ex(linked, 'Small right hydropleura. No pneumothorax.')
    assert ('effusion', 0) in ex(linked, 'No hydropleura.')
    assert 'effusion' not in {e for e, _ in ex(ReportParser(backend='spacy'), 'Small right hydropleura.')}
    nlp.remove_pipe('scispacy_linker')
    assert 'effusion' not in {e for e, _ in ex(ReportParser(backend='spacy', nlp=nlp), 'Small right hydropleura.')}

def test_linker_needs_a_model_and_the_spacy_backend():
    with pytest.raises(MedklipError, match='also pass model'): ReportParser(backend='spacy', linker='umls')
    with pytest.raises(MedklipError, match="needs backend='spacy'"): ReportParser(linker='umls')

def test_span_exist_for_any_condition(rp):
    "Cue rules on a span outside the vocabulary (e.g. a NegEx condition)."
    eng, s = rp.engine, 'the patient has no fever, but possible cellulitis of the foot.'
    span = lambda w: (s.index(w), s.index(w) + len(w))
    assert eng.span_exist(s, *span('fever')) == 0
    assert eng.span_exist(s, *span('cellulitis')) == -1
    assert eng.span_exist('mild cellulitis of the left foot.', 5, 15) == 1

def test_negex_bench_beats_keyword_baseline(shared_dir, capsys):
    "On the NegEx/ConText kit (not tuned on), the cue rules are at least as accurate as the keyword baseline."
    import importlib.util, re
    from pathlib import Path
    spec = importlib.util.spec_from_file_location('parse_negex', Path(__file__).parents[1]/'bench/parse_negex.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    assert m.main(['--shared', str(shared_dir)]) == 0
    acc = [float(x) for x in re.findall(r'accuracy=([0-9.]+)', capsys.readouterr().out)]
    assert len(acc) == 6 and acc[0] >= acc[1] and acc[4] >= acc[5] and acc[0] > 0.95  # all, radiology, other reports


# ---- parse-reports input robustness (issue 14) ----
def _csv(tmp_path, data:bytes):
    f = tmp_path/'r.csv'; f.write_bytes(data); return f

def test_iter_reports_merges_duplicate_study_ids(tmp_path):
    from medklip.text.parse import iter_reports
    f = _csv(tmp_path, b'study_id,findings,impression\n1,large left pleural effusion.,\n2,normal.,\n1,,no pneumothorax.\n')
    with pytest.warns(UserWarning, match=r"\['1'\].*merged"): out = list(iter_reports(f))
    assert [(ln, s) for ln, s, _ in out] == [(2, '1'), (3, '2')]
    assert out[0][2] == {'findings': 'large left pleural effusion.', 'impression': 'no pneumothorax.'}

def test_iter_reports_bom_utf16_latin1(tmp_path):
    from medklip.text.parse import iter_reports
    rows = 'study_id,findings,impression\n7,café effusion.,normal\n'
    assert list(iter_reports(_csv(tmp_path, b'\xef\xbb\xbf' + rows.encode())))[0][1] == '7'   # BOM is not a missing column
    assert list(iter_reports(_csv(tmp_path, rows.encode('utf-16'))))[0][2]['findings'] == 'café effusion.'
    with pytest.warns(UserWarning, match='line 2 is not UTF-8'):
        assert list(iter_reports(_csv(tmp_path, rows.encode('latin-1'))))[0][2]['findings'] == 'café effusion.'

def test_iter_reports_line_numbers_count_multiline_cells(tmp_path):
    from medklip.text.parse import iter_reports
    f = _csv(tmp_path, b'study_id,findings,impression\n1,"two\nlines",x\n,empty id,\n')
    assert [(ln, s) for ln, s, _ in iter_reports(f)] == [(2, '1'), (4, None)]

def test_mimic_folder_keeps_findings_and_impression(tmp_path):
    "A MIMIC report folder is parsed from FINDINGS and IMPRESSION only by default: an indication is no mention (issue 13)."
    from medklip.text.parse import iter_reports
    f = tmp_path/'files/p10/p10000032/s5.txt'; f.parent.mkdir(parents=True)
    f.write_text('FINAL REPORT\nINDICATION: eval for pneumonia\nFINDINGS: Large left effusion.\nIMPRESSION: Effusion.')
    (_, sid, secs), = iter_reports(tmp_path)
    assert sid == '5' and set(secs) == {'findings', 'impression'} and 'pneumonia' not in ' '.join(secs.values())
    assert list(iter_reports(tmp_path, sections=('impression',)))[0][2] == {'impression': ' effusion.'}
    g = tmp_path/'files/p10/p10000032/s6.txt'; g.write_text('No acute process.')  # no sections at all: kept whole
    assert list(iter_reports(tmp_path))[1][2] == {'report': 'No acute process.'}
    out = tmp_path/'o.jsonl'
    assert parse_reports_cli([str(tmp_path), '--out', str(out), '--workers', '1', '--quiet', '--sections', 'all']) == 0
    assert len(out.read_text().splitlines()) == 2


# ---- medspaCy ConText rules, own cue rules, frozen split (issue 13) ----
def test_context_rules_come_from_the_installed_medspacy_files():
    "The cue rules' base is medspaCy's context_rules.json, found through the installed distribution's file list."
    import importlib.metadata as md
    from medklip.text.parse import medspacy_resource, load_context_rules
    p = medspacy_resource('context_rules.json')
    assert any(Path(f.locate()) == p for f in md.files('medspacy')) and p.parts[-3:] == ('resources', 'en', 'context_rules.json')
    raw = json.loads(p.read_text())['context_rules']
    assert len(load_context_rules()) == len(raw)   # every English rule compiles (all are existence/uncertainty rules)
    assert medspacy_resource('section_patterns.json').exists()

@pytest.mark.parametrize('text,entity,exist', [
    ('Lack of pleural effusion.', 'effusion', 0),               # medspaCy "lack of", not in parse_cues.tsv
    ('The patient denies pneumonia.', 'pneumonia', 0),          # medspaCy token pattern deny/denies/denied
    ("There isn't any effusion.", 'effusion', 0),               # "is" + "n't" clitic joined
    ('Pneumothorax has been ruled out.', 'pneumothorax', 0),    # medspaCy backward "has been ruled out"
    ('History of pneumonia.', 'pneumonia', -1),                 # HISTORICAL -> uncertain
    ('The effusion is not seen.', 'effusion', 0),               # overlapping cues "is not" / "not seen": longest wins
    ('Opacity may be secondary to pneumonia.', 'pneumonia', -1),  # medspaCy's negation terminator "secondary" leaves the hedge
    ('No evidence of pneumothorax, but there is pneumonia.', 'pneumonia', 1),
    ('No change in the effusion or pneumothorax.', 'pneumothorax', 1),   # an alternative under a pseudo-cue inherits it
    ('Small right pneumothorax and free air.', 'pneumothorax', 1),      # medspaCy's backward "free" is switched off
    ('History of pneumonia, now with new consolidation.', 'consolidation', 1),  # "now" ends the history scope
])
def test_context_rules_in_the_engine(rp, text, entity, exist):
    assert (entity, exist) in ex(rp, text)

def test_own_cues_each_have_a_reason_and_do_not_repeat_medspacy():
    "parse_cues.tsv holds only additions and overrides: no own surface form has the same kind and direction as medspaCy's rule."
    import re
    from medklip.text.parse import load_context_rules, load_own_cues
    ms = {}
    for variants, _, kind, d, src in load_context_rules():
        for v in variants or (): ms.setdefault(re.sub(r'[\s-]+', ' ', v), (kind, d))
    own = load_own_cues()
    assert own and all(len(why.split()) >= 3 for *_, why in own)
    assert not [c for vs, kind, d, c, _ in own if vs and all(ms.get(v) == (kind, d) for v in vs)]

def test_token_patterns_compile(tmp_path):
    "Literal, IN, REGEX and OP tokens of a ConText rules file compile into the fast matcher's forms."
    import re
    from medklip.text.parse import load_context_rules
    f = tmp_path/'rules.json'
    f.write_text(json.dumps({'context_rules': [
        {'literal': 'free of', 'category': 'NEGATED_EXISTENCE', 'pattern': None, 'direction': 'FORWARD'},
        {'literal': 'x', 'category': 'POSSIBLE_EXISTENCE', 'direction': 'BACKWARD',
         'pattern': [{'LOWER': {'IN': ['is', 'was']}}, {'LOWER': 'probably', 'OP': '?'}, {'LOWER': 'suspected'}]},
        {'literal': 'y', 'category': 'HYPOTHETICAL', 'direction': 'FORWARD',
         'pattern': [{'LOWER': {'REGEX': 'eval[a-z]*'}}, {'LOWER': 'for', 'OP': '+'}]},
        {'literal': 'z', 'category': 'NEGATED_EXISTENCE', 'direction': 'TERMINATE', 'pattern': [{'LOWER': 'yet'}]}]}))
    r = load_context_rules(str(f))
    assert r[0][:4] == (('free of',), None, 'neg', 'pre')
    assert set(r[1][0]) == {'is suspected', 'was suspected', 'is probably suspected', 'was probably suspected'} and r[1][2:4] == ('unc', 'post')
    assert r[2][0] is None and re.fullmatch(r[2][1], 'evaluated for') and r[2][2:4] == ('unc', 'pre')
    assert r[3][2] == 'term_neg'
    g = tmp_path/'pos_rules.json'  # a token attribute the engine cannot compile names the file and rule
    g.write_text(json.dumps({'context_rules': [{'literal': 'q', 'category': 'NEGATED_EXISTENCE', 'direction': 'FORWARD', 'pattern': [{'POS': 'NOUN'}]}]}))
    with pytest.raises(MedklipError, match='pos_rules.json rule 0'): load_context_rules(str(g))

def test_missing_medspacy_gives_the_pip_command(monkeypatch):
    "Without medspaCy's data files the parser stops with one error that names the pip command."
    import importlib.metadata as md
    import medklip.text.parse as P
    def gone(name): raise md.PackageNotFoundError(name)
    monkeypatch.setattr(md, 'files', gone)
    for f in (P.load_context_rules, P._cue_matcher, P.load_section_headers, P._header_re): f.cache_clear()
    try:
        with pytest.raises(MedklipError, match=r'pip install --no-deps medspacy==1\.3\.1'): P.RuleEngine()
        with pytest.raises(MedklipError, match='section_patterns.json'): P.split_sections('findings: no effusion.')
    finally:
        monkeypatch.undo()
        for f in (P.load_context_rules, P._cue_matcher, P.load_section_headers, P._header_re): f.cache_clear()
    assert P.RuleEngine().cue_re is not None

def test_corpus_conventions_are_named_options(rp):
    "BioScope's and the IU MeSH indexers' conventions are options, off by default."
    assert ex(rp, 'Atelectasis or pneumonia.') == {('atelectasis', 1), ('pneumonia', 1)}
    assert ex(rp, 'Consistent with pneumonia.') == {('pneumonia', 1)}
    bs = ReportParser(bioscope_hedges=True)
    assert ex(bs, 'Atelectasis or pneumonia.') == {('atelectasis', -1), ('pneumonia', -1)}
    assert ex(bs, 'Consistent with pneumonia.') == {('pneumonia', -1)}
    assert ex(bs, 'No effusion, consolidation, or pneumothorax.') == {('effusion', 0), ('consolidation', 0), ('pneumothorax', 0)}
    assert 'nodule' not in {e for e, _ in ex(rp, 'Bilateral upper lobe nodular opacities.')}
    assert ('nodule', 1) in ex(ReportParser(nodular_as_nodule=True), 'Bilateral upper lobe nodular opacities.')

def test_section_rules_from_medspacy_and_own(rp):
    from medklip.text.parse import split_sections, section_category
    assert section_category('clinical indication') == 'history_of_present_illness'   # medspaCy's section rules
    assert section_category('findings') == 'findings'                                # own override (medspaCy: labs_and_studies)
    assert [n for n, _ in split_sections('lungs clear. impression: no effusion.')] == ['', 'impression']
    assert rp.parse('REASON FOR THIS EXAMINATION: eval pneumonia\nFINDINGS: No effusion.') == \
        [dict(entity='effusion', position='pleural_unspec', exist=0)]

def test_sentence_memo_gives_the_same_triplets():
    eng = ReportParser().engine
    s = 'small left pleural effusion, no pneumothorax.'
    first = eng.sentence_triplets(s); eng.clear_cache()
    assert eng.sentence_triplets(s) == first == eng._sentence_triplets(s) and eng.sentence_triplets(s) is not eng.sentence_triplets(s)

def test_frozen_split_rule():
    "bench/parse_split.py's pinned hash rule: fixed halves, about half each."
    import importlib.util
    spec = importlib.util.spec_from_file_location('parse_split', Path(__file__).parents[1]/'bench/parse_split.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    assert [m.part('iu_xray', i) for i in (1, 2, 3, 4, 5, 6)] == ['check', 'tune', 'check', 'tune', 'check', 'check']
    assert [m.part('bioscope', d) for d in ('97636670', '97638202')] == ['check', 'tune']
    assert 1400 < sum(m.part('iu_xray', i) == 'tune' for i in range(1, 3001)) < 1600

def test_cli_corpus_convention_flags(tmp_path):
    src = tmp_path/'r.csv'; src.write_text('study_id,findings,impression\n1,Atelectasis or pneumonia.,Nodular opacities.\n')
    out, stats = tmp_path/'o.jsonl', tmp_path/'s.json'
    assert parse_reports_cli([str(src), '--out', str(out), '--stats', str(stats), '--workers', '1', '--quiet',
                              '--bioscope-hedges', '--nodular-as-nodule']) == 0
    got = {(t['entity'], t['exist']) for t in json.loads(out.read_text())['triplets']}
    assert {('atelectasis', -1), ('pneumonia', -1), ('nodule', 1)} <= got
    st = json.loads(stats.read_text())
    assert st['bioscope_hedges'] is True and st['nodular_as_nodule'] is True

def test_other_exam_parts_of_a_multi_part_report_are_skipped(rp):
    "Findings under another body part's header ('Left ankle.', 'Right shoulder:') belong to that exam's images, not the chest's."
    from medklip.text.parse import exam_header
    assert exam_header('Right elbow and forearm') == 'other_exam' and exam_header('2. chest') == 'chest_exam'
    assert exam_header('Mild degenerative change') is None
    r = {'findings': 'Chest. Small left pleural effusion. Left ankle. Midfoot degenerative changes. No acute fracture.',
         'impression': 'Chest: no pneumothorax. Right shoulder: the lateral screw is fractured. Chest. Small effusion.'}
    got = ex(rp, r)
    assert ('effusion', 1) in got and ('pneumothorax', 0) in got
    assert not {e for e, _ in got} & {'degenerative', 'fracture'}
    assert ('degenerative', 1) in ex(rp, 'Degenerative changes of the thoracic spine.')   # the spine on the chest image still counts
    assert ex(ReportParser(backend='spacy'), r) == got                                   # the spaCy backend filters the same

@pytest.mark.parametrize('text,entity,exist', [
    ('No pleural effusion.. Multiple calcified granulomas bilaterally.', 'calcification', 1),   # '..' ends a sentence
    ('Calcification is seen over the mediastinum; a nodule is not identified.', 'nodule', 0),
    ('Calcification is seen over the mediastinum xxxx a nodule is not identified.', 'calcification', 1),  # an affirmed predicate ends the negation's backward reach
    ('The catheter tip is visualized in the mid SVC.', 'catheter', 1),                        # ... but not the position's
    ('Aspiration or edema are also possible.', 'edema', -1),                                 # predicative hedge after its finding
    ('Mild opacities, favoring scar or atelectasis.', 'atelectasis', -1),
    ('Pericardial effusion on a prior CT.', 'effusion', None),                               # not a pleural effusion
    ('Stable enlarged cardiomediastinal silhouette.', 'cardiomegaly', None),                 # heart and mediastinum: not specific
    ('Enlarged cardiac silhouette.', 'cardiomegaly', 1),
    ('Small rounded densities not seen on the previous exam.', 'density', 1),                # a comparison: new, not absent
    ('A nodule not previously seen.', 'nodule', 1),
    ('Effusion is not seen.', 'effusion', 0),
    ('Indeterminate 1.4 cm opacity.', 'opacity', 1),                                         # its nature is indeterminate, not its existence
    ('No indeterminate nodules.', 'nodule', 0),
    ('Small medial pleural air collection.', 'pneumothorax', 1),
])
def test_general_scope_and_lexicon_rules(rp, text, entity, exist):
    got = dict(ex(rp, text))
    assert got.get(entity) == exist, (text, got)

def test_pulse_generator_is_a_device_not_a_catheter(rp):
    "A tip over the right atrium from a cardiac generator's leads is not a central line."
    assert 'catheter' not in dict(ex(rp, 'Cardiac xxxx generator overlies the left upper thorax with xxxx tips overlying the right atrium.'))
    assert ('catheter', 1) in ex(rp, 'Right chest catheter tip in the right atrium.')

def _one_line_error(capsys, argv):
    "Run `medklip parse-reports ARGV`: exit status 2 and the single stderr line."
    from medklip.cli import main
    assert main(['parse-reports', *argv, '--workers', '1', '--quiet']) == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and 'Traceback' not in err, err
    return err

def test_cli_bad_report_files_are_one_line_errors(tmp_path, capsys, monkeypatch):
    "Broken symlink, unreadable file, UTF-16 without a BOM: one line naming the file and what to do, exit 2."
    out = ['--out', str(tmp_path/'o.jsonl')]
    (tmp_path/'link.csv').symlink_to(tmp_path/'gone.csv')
    err = _one_line_error(capsys, [str(tmp_path/'link.csv'), *out])
    assert 'broken symlink' in err and 'link.csv' in err and 'gone.csv' in err
    u16 = tmp_path/'u16.csv'; u16.write_bytes('study_id,findings,impression\n1,Small effusion.,\n'.encode('utf-16-le'))
    err = _one_line_error(capsys, [str(u16), *out])
    assert 'u16.csv' in err and 'UTF-16 without a byte-order mark' in err and 're-save it as UTF-8' in err
    ok = tmp_path/'ok.csv'; ok.write_text('study_id,findings,impression\n1,Small left effusion.,\n')
    real = Path.read_bytes
    monkeypatch.setattr(Path, 'read_bytes', lambda self: (_ for _ in ()).throw(PermissionError(13, 'Permission denied')) if self.name == 'ok.csv' else real(self))
    err = _one_line_error(capsys, [str(ok), *out])
    assert 'ok.csv' in err and 'Permission denied' in err and not (tmp_path/'o.jsonl').exists()

def test_cli_huge_report_field_is_read(tmp_path):
    "A 1 MB report (over csv's default 128 kB field limit) is parsed, not a traceback."
    src = tmp_path/'big.csv'; src.write_text('study_id,findings,impression\n1,' + 'Small left pleural effusion. ' * 40000 + ',\n')
    out = tmp_path/'o.jsonl'
    assert parse_reports_cli([str(src), '--out', str(out), '--workers', '1', '--quiet']) == 0
    assert {'entity': 'effusion', 'position': 'left_pleural', 'exist': 1} in json.loads(out.read_text())['triplets']

def test_cli_mimic_folder_broken_link_is_named(tmp_path, capsys):
    d = tmp_path/'files/p10/p10000032'; d.mkdir(parents=True)
    (d/'s1.txt').symlink_to(tmp_path/'nowhere.txt')
    err = _one_line_error(capsys, [str(tmp_path), '--out', str(tmp_path/'o.jsonl')])
    assert 's1.txt' in err and 'broken symlink' in err
