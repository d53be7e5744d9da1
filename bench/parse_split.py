"""The frozen development split of the parser benchmarks on ../shared, and helpers both parser benches share.

Split rule (pinned, v1): a report is in the TUNING half when int(sha256(f"parse-split-v1:{corpus}:{id}").hexdigest()[:8], 16)
is even, else in the CHECK half; corpus 'iu_xray' with the IU study_id, 'bioscope' with the BioScope doc_id (every unit
of one report falls in one half). Protocol: change rules by reading TUNING-half errors only (`python bench/parse_split.py
errors-iu` / `errors-bioscope` print them); score the CHECK half only when a round of changes is finished, never read
its errors (`score-tune` prints tuning-half figures only). Untuned sets (never read while writing rules): the NegEx/ConText kit, NegBio's OpenI labels (different
labels, same IU texts); its non-radiology reports are the clinical text outside radiology (BioScope's non-clinical
parts were not staged)."""
from __future__ import annotations
import csv, hashlib, re, sys, time
from pathlib import Path

def part(corpus:str, rid) -> str:
    "'tune' or 'check': the frozen half of one report id."
    return 'tune' if int(hashlib.sha256(f"parse-split-v1:{corpus}:{rid}".encode()).hexdigest()[:8], 16) % 2 == 0 else 'check'

def baseline(shared:Path):
    "The keyword baseline's lexicon and negation regex (../shared/tools/negex_baseline.py), without running its file loop."
    ns = {}
    exec((shared/'tools/negex_baseline.py').read_text().split('neg = True')[0], ns)
    return ns['LEX'], ns['NEG']

def baseline_pass(texts, LEX, NEG) -> float:
    "Seconds the keyword baseline's matching loop takes over `texts` in this process."
    t0 = time.perf_counter()
    for text in texts:
        for sent in re.split(r'(?<=[.;])\s+', text.lower()):
            for e, keys in LEX.items():
                for k in keys:
                    i = sent.find(k)
                    if i >= 0: NEG.search(sent[:i]); break
    return time.perf_counter() - t0

def speed_lines(parser, reports, texts, shared:Path, repeat:int=3, what:str='reports') -> list[str]:
    "Rules-backend and keyword-baseline throughput on one core, measured alternately in this run (best of `repeat` each), and their ratio."
    import os
    LEX, NEG = baseline(shared)
    parse = parser.parse
    for r in reports[:50]: parse(r)  # warm the word caches
    rules = base = float('inf')
    for _ in range(repeat):
        parser.engine.clear_cache()  # every timed pass is a first pass: no sentence is memoised from an earlier one
        t0 = time.perf_counter()
        for r in reports: parse(r)
        rules = min(rules, time.perf_counter() - t0)
        base = min(base, baseline_pass(texts, LEX, NEG))
    n = len(reports)
    load = os.getloadavg() if hasattr(os, 'getloadavg') else (float('nan'),) * 3
    return [f"speed (one core; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores; best of {repeat} alternating passes over {n} {what}):",
            f"  rules backend:    {n / rules:,.0f} {what}/s",
            f"  keyword baseline: {n / base:,.0f} {what}/s",
            f"  ratio rules/baseline = {base / rules:.2f} (sentence memo cleared before each rules pass)"]

def _errors_iu(shared:Path):
    "Tuning-half IU reports where the default parser's positive entity set differs from the MeSH reference."
    import importlib.util
    from medklip.text.parse import ReportParser
    spec = importlib.util.spec_from_file_location('iu_mesh_score', shared/'tools/iu_mesh_score.py')
    S = importlib.util.module_from_spec(spec); spec.loader.exec_module(S)
    rows = [r for r in csv.DictReader(open(shared/'data/iu_xray/reports.csv', newline='', encoding='utf-8')) if part('iu_xray', r['study_id']) == 'tune']
    keep = [r for r in rows if r['mesh_major'].strip() not in ('No Indexing', 'Technical Quality of Image Unsatisfactory')
            and (r['findings'].strip() or r['impression'].strip())]
    ref, p = S.reference(keep), ReportParser()
    for r in keep:
        pos = {t['entity'] for t in p.parse({'findings': r['findings'], 'impression': r['impression']}) if t['exist'] == 1} & set(S.ENTITIES)
        if pos != ref[r['study_id']]:
            print(f"{r['study_id']}: missed={sorted(ref[r['study_id']] - pos)} extra={sorted(pos - ref[r['study_id']])}\n  F: {r['findings']}\n  I: {r['impression']}")

def _errors_bioscope(shared:Path):
    "Tuning-half BioScope units whose findings do not all carry the expected exist value."
    import subprocess, tempfile
    from medklip.text.parse import ReportParser
    SKIP = {"normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free", "excluded_obs", "tail_abnorm_obs"}
    units = Path(tempfile.mkdtemp())/'units.csv'
    subprocess.run([sys.executable, str(shared/'tools/bioscope_units.py'), str(shared/'data/bioscope_clinical/sentences.csv'), str(units)], check=True)
    p = ReportParser()
    for r in csv.DictReader(open(units, newline='', encoding='utf-8')):
        if part('bioscope', r['study_id'].split(':')[0]) != 'tune': continue
        got = [(t['entity'], t['exist']) for t in p.parse({'findings': r['findings']}) if t['entity'] not in SKIP]
        if got and any(x != int(r['expected']) for _, x in got): print(f"{r['study_id']} expected={r['expected']} got={got}: {r['findings']}")

def _score_tune(shared:Path):
    "Tuning-half figures only (for use during a round of rule changes): IU MeSH F1 (default, probable_as=1) and BioScope units."
    import importlib.util, subprocess, tempfile, collections
    from medklip.text.parse import ReportParser
    spec = importlib.util.spec_from_file_location('iu_mesh_score', shared/'tools/iu_mesh_score.py')
    S = importlib.util.module_from_spec(spec); spec.loader.exec_module(S)
    sys.path.insert(0, str(Path(__file__).parent)); from parse_iu import f1_scores
    rows = [r for r in csv.DictReader(open(shared/'data/iu_xray/reports.csv', newline='', encoding='utf-8')) if part('iu_xray', r['study_id']) == 'tune']
    keep = [r for r in rows if r['mesh_major'].strip() not in ('No Indexing', 'Technical Quality of Image Unsatisfactory') and (r['findings'].strip() or r['impression'].strip())]
    ref = S.reference(keep)
    for kw in ({}, {'probable_as': 1}):
        p = ReportParser(**kw)
        pos = {r['study_id']: {t['entity'] for t in p.parse({'findings': r['findings'], 'impression': r['impression']}) if t['exist'] == 1} for r in keep}
        print(f"IU tune {kw}: micro/macro = %.4f / %.4f" % f1_scores(ref, pos, S.ENTITIES))
    SKIP = {"normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free", "excluded_obs", "tail_abnorm_obs"}
    units = Path(tempfile.mkdtemp())/'units.csv'
    subprocess.run([sys.executable, str(shared/'tools/bioscope_units.py'), str(shared/'data/bioscope_clinical/sentences.csv'), str(units)], check=True)
    p, cov, right, n = ReportParser(), collections.Counter(), collections.Counter(), collections.Counter()
    for r in csv.DictReader(open(units, newline='', encoding='utf-8')):
        if part('bioscope', r['study_id'].split(':')[0]) != 'tune': continue
        e = int(r['expected']); n[e] += 1
        got = [t['exist'] for t in p.parse({'findings': r['findings']}) if t['entity'] not in SKIP]
        if got: cov[e] += 1; right[e] += all(x == e for x in got)
    acc = {e: right[e] / cov[e] for e in (0, -1, 1)}
    print(f"BioScope tune: neg/unc/aff = {acc[0]:.3f} / {acc[-1]:.3f} / {acc[1]:.3f} macro={sum(acc.values()) / 3:.4f} coverage={sum(cov.values()) / sum(n.values()):.3f}")

if __name__ == '__main__':
    import os
    shared = Path(os.environ.get('MEDKLIP_SHARED', '/work/shared'))
    {'errors-iu': _errors_iu, 'errors-bioscope': _errors_bioscope, 'score-tune': _score_tune}[sys.argv[1]](shared)
