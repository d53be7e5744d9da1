"RadGraph importer and LLM extractor (against a local fake chat-completions server)."
import json, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import pytest
from medklip.core import MedklipError, InputError
from medklip.vocab import ENTITIES, POSITIONS
from medklip.text.backends import import_radgraph, LLMExtractor, phrase_entities, phrase_positions, validate_reply, llm_schema, ReplyError


def _ent(tokens, label, *rels): return {"tokens": tokens, "label": label, "start_ix": 0, "end_ix": 0, "relations": [list(r) for r in rels]}


def test_radgraph_labels_relations_and_ids(tmp_path):
    graphs = {
        "files/p10/p10000032/s50414267.txt": {"text": "...", "entities": {
            "1": _ent("right", "ANAT-DP", ("modify", "2")), "2": _ent("lung", "ANAT-DP"), "3": _ent("base", "ANAT-DP", ("modify", "2")),
            "4": _ent("opacity", "OBS-U", ("located_at", "2")),
            "5": _ent("cardiomegaly", "OBS-DA"),
            "6": _ent("mild", "OBS-DP", ("modify", "7")), "7": _ent("edema", "OBS-DP", ("located_at", "8")),
            "8": _ent("bilateral", "ANAT-DP", ("modify", "9")), "9": _ent("perihilar", "ANAT-DP"),
            "10": _ent("honeycombing", "OBS-DP")}},
        "p11/p11000001/s51111111.txt": {"text": "...", "labeler_1": {"entities": {"1": _ent("pneumothorax", "OBS-DP")}},
                                         "labeler_2": {"entities": {}}},
    }
    f = tmp_path / 'g.json'; f.write_text(json.dumps(graphs))
    a, b = list(import_radgraph(f))
    assert a['study_id'] == '50414267' and b['study_id'] == '51111111'
    t = {(x['entity'], x['position']): x['exist'] for x in a['triplets']}
    assert t[('opacity', 'right_lower_lung')] == -1
    assert t[('cardiomegaly', 'unspecified')] == 0
    assert {p for e, p in t if e == 'edema'} == set(phrase_positions('bilateral perihilar'))
    assert t[('tail_abnorm_obs', 'unspecified')] == 1
    assert not any(e in ('excluded_obs',) for e, _ in t)  # 'mild' only modifies edema
    assert all(x['entity'] in ENTITIES and x['position'] in POSITIONS for x in a['triplets'] + b['triplets'])
    assert b['triplets'] == [{'entity': 'pneumothorax', 'position': 'unspecified', 'exist': 1}]
    assert [s['triplets'] for s in import_radgraph(f, labeler='labeler_2')][1] == []


def test_radgraph_errors(tmp_path):
    f = tmp_path / 'g.json'
    f.write_text('{"k": {"entities": {"1": {"label": "OBS-DP"}}}}')
    with pytest.raises(InputError, match="entity 1"): list(import_radgraph(f))
    f.write_text('[1, 2')
    with pytest.raises(InputError, match='not valid JSON'): list(import_radgraph(f))
    with pytest.raises(InputError, match='not found'): list(import_radgraph(tmp_path / 'none.json'))


def test_phrase_mapping():
    assert phrase_entities('right pleural effusion') == ['effusion']
    assert phrase_entities('unchanged') == ['excluded_obs']
    assert phrase_positions('right costophrenic angle') == ['right_costophrenic']
    assert phrase_positions('unspecified') == ['unspecified']


GOOD = {"findings": [
    {"finding": "pleural effusion", "status": "present", "severity": "moderate", "location": "right costophrenic angle", "category": "fluid"},
    {"finding": "pneumothorax", "status": "absent", "severity": "none", "location": "unspecified", "category": "lucency"},
    {"finding": "pneumonia", "status": "uncertain", "severity": "unspecified", "location": "left lower lobe", "category": "opacity"}]}


class _Server:
    "A chat-completions fake on 127.0.0.1 with an ephemeral port; `script` is a list of (status, content) replies."
    def __init__(self, script):
        self.script, self.requests = list(script), []
        outer = self
        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.requests.append((self.path, json.loads(self.rfile.read(int(self.headers['Content-Length'])))))
                status, content = outer.script.pop(0) if outer.script else (200, json.dumps(GOOD))
                body = json.dumps({'choices': [{'message': {'role': 'assistant', 'content': content}}]}).encode() if status == 200 else b'busy'
                self.send_response(status); self.send_header('Content-Type', 'application/json'); self.end_headers(); self.wfile.write(body)
            def log_message(self, *a): pass
        self.srv = ThreadingHTTPServer(('127.0.0.1', 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1"
    def __enter__(self):
        threading.Thread(target=self.srv.serve_forever, daemon=True).start(); return self
    def __exit__(self, *a): self.srv.shutdown(); self.srv.server_close()


def test_llm_malformed_then_good_is_retried_and_cached(tmp_path):
    with _Server([(200, '{"findings": [{"finding": "effusion", "status": "maybe"'), (200, json.dumps(GOOD))]) as s:
        llm = LLMExtractor(s.url, 'fake', cache_dir=tmp_path, backoff=0)
        out = llm('123', 'Moderate right effusion. No pneumothorax. Possible left lower lobe pneumonia.')
        assert llm.calls == 2 and len(s.requests) == 2
        path, req = s.requests[0]
        assert path == '/v1/chat/completions' and req['model'] == 'fake'
        rf = req['response_format']
        assert rf['type'] == 'json_schema' and rf['json_schema']['strict'] is True
        assert out == {'study_id': '123', 'triplets': [
            {'entity': 'effusion', 'position': 'right_costophrenic', 'exist': 1},
            {'entity': 'pneumothorax', 'position': 'unspecified', 'exist': 0},
            {'entity': 'pneumonia', 'position': 'lower_left_lobe', 'exist': -1}]}
        assert llm('123', 'Moderate right effusion. No pneumothorax. Possible left lower lobe pneumonia.') == out
        assert len(s.requests) == 2  # second answer from the cache
        LLMExtractor(s.url, 'other-model', cache_dir=tmp_path, backoff=0).extract('Moderate right effusion. No pneumothorax. Possible left lower lobe pneumonia.')
        assert len(s.requests) == 3  # the model is part of the cache key


def test_llm_http_error_then_good(tmp_path):
    with _Server([(503, ''), (200, json.dumps(GOOD))]) as s:
        llm = LLMExtractor(s.url, 'fake', backoff=0)
        assert len(llm.extract('report')) == 3 and llm.calls == 2


def test_llm_gives_up_with_study_and_url():
    with _Server([(200, 'not json')] * 3) as s:
        llm = LLMExtractor(s.url, 'fake', retries=3, backoff=0)
        with pytest.raises(MedklipError) as e: llm.extract('report', study_id='s42')
        assert 's42' in str(e.value) and s.url in str(e.value) and llm.calls == 3


def test_validate_reply_rejects_bad_enums():
    schema = llm_schema(['fluid', 'opacity'])
    bad = {"findings": [{**GOOD['findings'][0], "category": "weird"}]}
    with pytest.raises(ReplyError, match='category'): validate_reply(json.dumps(bad), schema)
    with pytest.raises(ReplyError): validate_reply('{"items": []}', schema)


def test_cli_radgraph_and_llm_backends(tmp_path, capsys):
    from medklip.text.backends import parse_reports_cli
    g = tmp_path / 'g.json'
    g.write_text(json.dumps({"p10/p10000032/s50414267.txt": {"text": "...", "entities": {"1": _ent("pneumothorax", "OBS-DA")}}}))
    assert parse_reports_cli([str(g), '--backend', 'radgraph', '--out', str(tmp_path / 'r.jsonl'), '--quiet']) == 0
    assert [json.loads(l) for l in open(tmp_path / 'r.jsonl')] == [
        {'study_id': '50414267', 'triplets': [{'entity': 'pneumothorax', 'position': 'unspecified', 'exist': 0}]}]
    csv = tmp_path / 'r.csv'
    csv.write_text('study_id,findings,impression\n1,Moderate right effusion.,No pneumothorax.\n2,Clear lungs.,\n')
    # study 1 gets a good reply; study 2 only garbage: it is reported by id and the run goes on
    with _Server([(200, json.dumps(GOOD))] + [(200, 'not json')] * 2) as s:
        rc = parse_reports_cli([str(csv), '--backend', 'llm', '--llm-url', s.url, '--llm-model', 'fake', '--llm-cache', '',
                                '--llm-retries', '2', '--llm-backoff', '0',
                                '--out', str(tmp_path / 'l.jsonl'), '--stats', str(tmp_path / 's.json'), '--quiet'])
    assert rc == 0
    out = [json.loads(l) for l in open(tmp_path / 'l.jsonl')]
    assert [d['study_id'] for d in out] == ['1'] and {'entity': 'effusion', 'position': 'right_costophrenic', 'exist': 1} in out[0]['triplets']
    stats = json.loads((tmp_path / 's.json').read_text())
    assert stats['n_errors'] == 1 and stats['errors'][0]['study_id'] == '2'
    assert 'study 2' in capsys.readouterr().err
    with pytest.raises(MedklipError, match='--llm-url'):
        parse_reports_cli([str(csv), '--backend', 'llm', '--out', str(tmp_path / 'x.jsonl')])
