"""Negation and uncertainty of the report parser on BioScope clinical units (see /work/shared/tools/bioscope_units.py).

usage: python bench/parse_bioscope.py [--shared /work/shared] [--out-dir /tmp/parse_bioscope] [--repeat 3]
Each unit (a negation scope, a speculation scope, or an uncued impression sentence) is parsed as one report and
scored by the shared scorer (per-class accuracy, macro accuracy, coverage), for the default parser and for the named
option `bioscope_hedges=True` (BioScope's convention), on the frozen tuning half and check half
of the reports (bench/parse_split.py: pinned hash of the doc id; rules are changed by reading tuning-half errors
only), on all units, and on the units from the clinical-history section alone (reason-for-exam text, not radiology
findings; BioScope's non-clinical parts were not staged, so the sets outside radiology are the NegEx kit's reports). Then the untuned NegEx/ConText kit (bench/parse_negex.py: all, radiology and other reports),
and the speed of the rules backend and the keyword baseline on the units, measured alternately in this run."""
from __future__ import annotations
import argparse, csv, json, os, subprocess, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from parse_split import part, speed_lines
import parse_negex
from medklip.text.parse import ReportParser

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--shared', default=os.environ.get('MEDKLIP_SHARED', '/work/shared'))
    ap.add_argument('--out-dir', default='/tmp/parse_bioscope')
    ap.add_argument('--backend', default='rules')
    ap.add_argument('--repeat', type=int, default=3, help='timing repeats (best is reported)')
    a = ap.parse_args(argv)
    shared, out = Path(a.shared), Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    units = out/'units.csv'
    subprocess.run([sys.executable, str(shared/'tools/bioscope_units.py'), str(shared/'data/bioscope_clinical/sentences.csv'), str(units)], check=True)
    rows = list(csv.DictReader(open(units, newline='', encoding='utf-8')))
    fields = list(rows[0])
    # the section of each unit's scope (History units are clinical history, not radiology findings)
    section = {f"{r['doc_id']}:{r['scope_id'] or r['sentence_id']}": r['section']
               for r in csv.DictReader(open(shared/'data/bioscope_clinical/sentences.csv', newline='', encoding='utf-8'))}
    doc = lambda r: r['study_id'].split(':')[0]

    def score(name, keep, pred):
        sub = out/'units_subset.csv'
        with open(sub, 'w', newline='', encoding='utf-8') as f:
            w = csv.DictWriter(f, fields); w.writeheader(); w.writerows(r for r in rows if keep(r))
        res = subprocess.run([sys.executable, str(shared/'tools/bioscope_score.py'), str(sub), str(pred)], capture_output=True, text=True, check=True)
        print(f"-- {name} (n={sum(1 for r in rows if keep(r))} units) --\n" + res.stdout.strip())

    for label, kw in (('default parser', {}), ("option bioscope_hedges=True ('consistent with X', 'A or B' leaning hedges: BioScope's convention)", {'bioscope_hedges': True})):
        parser = ReportParser(backend=a.backend, **kw)
        pred = out/f"parser{'_' + '_'.join(kw) if kw else ''}.jsonl"
        with open(pred, 'w') as f:
            for r in rows: f.write(json.dumps({'study_id': r['study_id'], 'triplets': parser.parse({'findings': r['findings']})}) + '\n')
        print(f"== {label} ==")
        score('tuning half', lambda r: part('bioscope', doc(r)) == 'tune', pred)
        score('check half', lambda r: part('bioscope', doc(r)) == 'check', pred)
        score('all units', lambda r: True, pred)
        if not kw:
            # clinical-history units are reasons for the exam, not image findings (both halves; no affirmed units, so its macro is not meaningful)
            score('clinical-history section units only, both halves', lambda r: section.get(r['study_id']) == 'History', pred)
            default = parser
    parser = default
    print('-- untuned: NegEx/ConText kit (bench/parse_negex.py) --')
    print('\n'.join(parse_negex.evaluate(shared)))
    if a.backend == 'rules':
        print('\n'.join(speed_lines(parser, [{'findings': r['findings']} for r in rows], [r['findings'] for r in rows], shared, a.repeat, 'units')))
    return 0

if __name__ == '__main__': sys.exit(main())
