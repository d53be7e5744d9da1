"""Accuracy and speed of the report parser on IU X-ray reports, scored against the manual MeSH annotations.

usage: python bench/parse_iu.py [--shared /work/shared] [--out-dir /tmp/parse_iu] [--repeat 3] [--spacy-n 0]
Development protocol (bench/parse_split.py): the reports are split once, by a pinned hash of the study id, into a
tuning half (rules are changed by reading its errors only) and a check half (scored when a round of changes is
finished, never read). Prints, for the default parser (every hedge -1) and for two named options that follow the
IU MeSH indexers' conventions (`probable_as=1`: leaning hedges such as 'probable X' and an unhedged 'X versus Y'
coded present; `nodular_as_nodule=True`: 'nodular opacities' also a nodule): MeSH micro/macro-F1 on the tuning half,
the check half and all reports (the shared scorer's per-entity table with --full); on the untuned set, NegBio's
OpenI 14-finding gold labels (different labels on the same IU texts, never used for rules), per half; the keyword
baseline; and the speed of the rules backend and of the keyword baseline on one core, measured alternately in the
same run, with their ratio (and the spaCy backend on the first --spacy-n reports)."""
from __future__ import annotations
import argparse, csv, importlib.util, json, os, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from parse_split import part, speed_lines
from medklip.text.parse import ReportParser

#: NegBio OpenI gold column -> entity (Fibrosis maps to the catch-all and Hernia has no positives: not scored)
GOLD14 = {'Atelectasis': 'atelectasis', 'Cardiomegaly': 'cardiomegaly', 'Effusion': 'effusion', 'Infiltration': 'infiltrate',
          'Mass': 'mass', 'Nodule': 'nodule', 'Pneumonia': 'pneumonia', 'Pneumothorax': 'pneumothorax',
          'Consolidation': 'consolidation', 'Edema': 'edema', 'Emphysema': 'emphysema', 'Pleural_Thickening': 'thicken'}

def f1_scores(ref:dict, pred:dict, ents) -> tuple[float, float]:
    "Micro and macro F1 of report-level entity sets `pred` against `ref` over `ents`."
    tp = fp = fn = 0; f1s = []
    for e in ents:
        t = sum(e in ref[s] and e in pred[s] for s in ref); p = sum(e in pred[s] for s in ref); r = sum(e in ref[s] for s in ref)
        tp += t; fp += p - t; fn += r - t
        f1s.append(2 * t / (p + r) if p + r else 0.0)
    return (2 * tp / (2 * tp + fp + fn) if tp else 0.0), sum(f1s) / len(f1s)

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--shared', default=os.environ.get('MEDKLIP_SHARED', '/work/shared'))
    ap.add_argument('--out-dir', default='/tmp/parse_iu')
    ap.add_argument('--repeat', type=int, default=3, help='timing repeats (best is reported)')
    ap.add_argument('--spacy-n', type=int, default=0, help='reports timed with the spaCy backend (0 = skip)')
    ap.add_argument('--full', action='store_true', help="also print the shared scorer's per-entity table for all reports")
    a = ap.parse_args(argv)
    shared, out = Path(a.shared), Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = shared/'data/iu_xray/reports.csv'
    rows = list(csv.DictReader(open(csv_path, newline='', encoding='utf-8')))
    reports = [{'findings': r['findings'], 'impression': r['impression']} for r in rows]
    score = lambda p: subprocess.run([sys.executable, str(shared/'tools/iu_mesh_score.py'), str(csv_path), str(p)],
                                     capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_file_location('iu_mesh_score', shared/'tools/iu_mesh_score.py')
    S = importlib.util.module_from_spec(spec); spec.loader.exec_module(S)
    keep = [r for r in rows if r['mesh_major'].strip() not in ('No Indexing', 'Technical Quality of Image Unsatisfactory')
            and (r['findings'].strip() or r['impression'].strip())]
    ref = S.reference(keep)
    gold_csv = shared/'data/negbio_openi_gold14/labels.csv'
    gold = {r['study_id']: {e for c, e in GOLD14.items() if r[c] == '1'} for r in csv.DictReader(open(gold_csv))} if gold_csv.exists() else None

    def report(name, parser):
        "Score one parser setting: MeSH F1 on the tuning half, the check half and all reports; NegBio's labels per half."
        trips = [parser.parse(r) for r in reports]
        pred = out/f'{name}.jsonl'
        with open(pred, 'w') as f:
            for r, t in zip(rows, trips): f.write(json.dumps({'study_id': r['study_id'], 'triplets': t}) + '\n')
        sc = score(pred)
        if a.full: print(sc.strip())
        pos = {r['study_id']: {t['entity'] for t in ts if t['exist'] == 1} for r, ts in zip(rows, trips)}
        for h in ('tune', 'check'):
            sub = {s: v for s, v in ref.items() if part('iu_xray', s) == h}
            mi, ma = f1_scores(sub, pos, S.ENTITIES)
            print(f"  IU MeSH {h:5s} half (n={len(sub)}): micro_f1={mi:.4f} macro_f1={ma:.4f}")
        print(f"  IU MeSH all        (n={len(ref)}): {sc.strip().splitlines()[-1]}")
        if gold is not None:
            for h in ('tune', 'check'):
                g = {s: v for s, v in gold.items() if s in pos and part('iu_xray', s) == h}
                mi, ma = f1_scores(g, pos, sorted(GOLD14.values()))
                print(f"  untuned: NegBio OpenI gold ({len(GOLD14)} findings) {h:5s} half (n={len(g)}): micro_f1={mi:.4f} macro_f1={ma:.4f}")
        return trips

    print('== default parser (every hedge -1, as SPEC §3 asks) ==')
    parser = ReportParser()
    trips = report('parser', parser)
    print("\n== option probable_as=1 (the IU MeSH indexers code 'probable X' / an unhedged 'X versus Y' as present) ==")
    report('parser_probable_as_1', ReportParser(probable_as=1))
    print("\n== options probable_as=1 + nodular_as_nodule=True (the indexers also code 'nodular opacities' as a nodule) ==")
    report('parser_iu_conventions', ReportParser(probable_as=1, nodular_as_nodule=True))
    unc = ReportParser(uncertain_as=1)
    pred1 = out/'parser_uncertain_as_1.jsonl'
    with open(pred1, 'w') as f:
        for r, rep in zip(rows, reports): f.write(json.dumps({'study_id': r['study_id'], 'triplets': unc.parse(rep)}) + '\n')
    print('\nfor reference, uncertain_as=1 (every hedge present), all reports:', score(pred1).strip().splitlines()[-1])
    base_out = out/'baseline.jsonl'
    subprocess.run([sys.executable, str(shared/'tools/negex_baseline.py'), str(csv_path), str(base_out)], check=True)
    print('keyword baseline, all reports:', score(base_out).strip().splitlines()[-1])
    texts = [r['findings'] + ' ' + r['impression'] for r in rows]
    print('\n'.join(speed_lines(parser, reports, texts, shared, a.repeat)))
    if a.spacy_n:
        sp = ReportParser(backend='spacy'); sub = reports[:a.spacy_n]
        for r in sub[:20]: sp.parse(r)
        t0 = time.perf_counter(); sp_trips = [sp.parse(r) for r in sub]; sp_t = time.perf_counter() - t0
        same = sum(x == y for x, y in zip(sp_trips, trips[:len(sub)]))
        print(f"  spacy backend: {len(sub) / sp_t:,.0f} reports/s on one core ({len(sub)} reports); identical triplets on {same}/{len(sub)} reports")
    return 0

if __name__ == '__main__': sys.exit(main())
