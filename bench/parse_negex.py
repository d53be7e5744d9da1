"""Negation scope on the NegEx/ConText test kit: clinical conditions (any concept, not only the 75 entities) labelled
Affirmed or Negated by humans, in sentences from six kinds of clinical report (13 of the shared reports are radiology).

usage: python bench/parse_negex.py [--shared /work/shared]
For every condition the parser's cue rules give the exist value of its span (`RuleEngine.span_exist`); 0 counts as
negated, 1 or -1 as affirmed (the kit has no uncertain label). Prints accuracy and negation precision/recall/F1 for all
conditions, for the radiology reports and for the other reports, beside the keyword baseline's negation pattern
(../shared/tools/negex_baseline.py) applied to the text before the condition in the same process. An external
check of how the cue rules generalise: nothing was tuned on this kit."""
from __future__ import annotations
import argparse, csv, os, re, sys
from pathlib import Path

from medklip.text.parse import RuleEngine, normalize_text

def scores(rows, pred) -> str:
    tp = sum(p and r['label'] == 'negated' for r, p in zip(rows, pred)); fp = sum(p for p in pred) - tp
    fn = sum(r['label'] == 'negated' for r in rows) - tp
    acc = sum(p == (r['label'] == 'negated') for r, p in zip(rows, pred)) / len(rows)
    prec, rec = tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return f"accuracy={acc:.3f} negated P={prec:.3f} R={rec:.3f} F1={f1:.3f}"

def evaluate(shared:Path) -> list[str]:
    "Report lines: accuracy and negation P/R/F1 of the cue rules and the keyword baseline, all / radiology / other reports."
    rows = list(csv.DictReader(open(shared/'data/negex_testset/sentences.csv', newline='', encoding='utf-8')))
    ns = {}
    exec((shared/'tools/negex_baseline.py').read_text().split('neg = True')[0], ns)  # its LEX and NEG only
    NEG = ns['NEG']
    eng = RuleEngine()
    kept, ours, base = [], [], []
    for r in rows:
        i = r['sentence'].find(r['target_term'].upper())  # the kit marks the condition in upper case
        if i < 0: continue
        before, target, after = r['sentence'][:i], r['sentence'][i:i + len(r['target_term'])], r['sentence'][i + len(r['target_term']):]
        pre = normalize_text(before); s = pre + target.lower() + normalize_text(after)
        kept.append(r)
        ours.append(eng.span_exist(s, len(pre), len(pre) + len(target)) == 0)
        base.append(bool(NEG.search(pre)))
    out = [f"conditions: {len(kept)} of {len(rows)} located in their sentence "
           f"({sum(r['label'] == 'negated' for r in kept)} negated)"]
    rad = lambda r: r['report_type_inferred'] == 'radiology'
    for name, sub in (('all reports', range(len(kept))),
                      ('radiology reports', [k for k, r in enumerate(kept) if rad(r)]),
                      ('other (non-radiology) reports', [k for k, r in enumerate(kept) if not rad(r)])):
        rs = [kept[k] for k in sub]
        out += [f"{name} (n={len(rs)}):",
                f"  medklip rules:    {scores(rs, [ours[k] for k in sub])}",
                f"  keyword baseline: {scores(rs, [base[k] for k in sub])}"]
    return out

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--shared', default=os.environ.get('MEDKLIP_SHARED', '/work/shared'))
    a = ap.parse_args(argv)
    print('\n'.join(evaluate(Path(a.shared))))
    return 0

if __name__ == '__main__': sys.exit(main())
