"""Negation and uncertainty of the report parser on BioScope clinical units (see /work/shared/tools/bioscope_units.py).

usage: python bench/parse_bioscope.py [--shared /work/shared] [--out-dir /tmp/parse_bioscope]
Each unit (a negation scope, a speculation scope, or an uncued impression sentence) is parsed as one report;
the shared scorer prints per-class accuracy, macro accuracy and coverage."""
from __future__ import annotations
import argparse, csv, json, os, subprocess, sys, time
from pathlib import Path

from medklip.text.parse import ReportParser

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--shared', default=os.environ.get('MEDKLIP_SHARED', '/work/shared'))
    ap.add_argument('--out-dir', default='/tmp/parse_bioscope')
    ap.add_argument('--backend', default='rules')
    a = ap.parse_args(argv)
    shared, out = Path(a.shared), Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    units = out/'units.csv'
    subprocess.run([sys.executable, str(shared/'tools/bioscope_units.py'), str(shared/'data/bioscope_clinical/sentences.csv'), str(units)], check=True)
    rows = list(csv.DictReader(open(units, newline='', encoding='utf-8')))
    parser = ReportParser(backend=a.backend)
    t0 = time.perf_counter()
    trips = [parser.parse({'findings': r['findings']}) for r in rows]
    dt = time.perf_counter() - t0
    pred = out/'parser.jsonl'
    with open(pred, 'w') as f:
        for r, t in zip(rows, trips): f.write(json.dumps({'study_id': r['study_id'], 'triplets': t}) + '\n')
    res = subprocess.run([sys.executable, str(shared/'tools/bioscope_score.py'), str(units), str(pred)], capture_output=True, text=True, check=True)
    print(res.stdout.strip())
    print(f"parser ({a.backend}): {len(rows) / dt:,.0f} units/s on one core")
    return 0

if __name__ == '__main__': sys.exit(main())
