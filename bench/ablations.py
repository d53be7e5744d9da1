"""Ablations on the demo corpus over seeds: plain MedKLIP, GK-MVLP, MedFILIP and both, mean ± spread.

    .venv/bin/python bench/ablations.py --demo data/demo --store work/store --triplets work/triplets.jsonl \
        --knowledge work/knowledge [--seeds 0 1 2] [--arms plain gkmvlp medfilip both] [--epochs N] [--work /tmp/abl]

For every arm and seed it pretrains (`medklip.train.pretrain`, the `pretrain:` settings of --params with the arm's
auxiliary losses and the seed; one torch thread), then runs zero-shot classification (`medklip zeroshot`, test split,
validate split for thresholds, name and description prompts, paired bootstrap) and grounding (`medklip ground`, test
split) in-process, and prints per arm: seen-finding mean AUROC, unseen name / description AUROC with the paired
description − name difference and its 95 % CI, pointing game (strict, tolerant, cell), energy, and normalised Dice,
as mean ± sd over seeds (the sd is the seed spread, not a CI). --epochs shortens the schedule (default: params.yaml's;
say so when you quote numbers). The store must come from `medklip prepare --dataset demo` (anatomy maps for GK-MVLP).
The last line is one JSON object with every run.
"""
from __future__ import annotations
import argparse, json, os, shutil, time
from pathlib import Path

import numpy as np

os.environ.setdefault('HF_HUB_OFFLINE', '1')
REPO = Path(__file__).resolve().parents[1]
ARMS = ('plain', 'gkmvlp', 'medfilip', 'both')


def arm_settings(arm:str, gk:float=.5, gk_attn:float=.5, mf:float=1.) -> dict:
    "The pretrain settings that switch an arm's auxiliary losses on (the one place to change when params move to scalars)."
    on = dict(gkmvlp={'gkmvlp': gk, 'gkmvlp_attn': gk_attn}, medfilip={'medfilip': mf})
    aux = {} if arm == 'plain' else on['gkmvlp'] if arm == 'gkmvlp' else on['medfilip'] if arm == 'medfilip' else {**on['gkmvlp'], **on['medfilip']}
    import medklip.losses as L
    if hasattr(L, 'METHOD_WEIGHTS'):                  # scalar switches (pretrain.gkmvlp_weight, ...; 0 = off)
        return {f'{k}_weight': float(aux.get(k, 0.)) for k in ('gkmvlp', 'gkmvlp_attn', 'medfilip')}
    return dict(aux_losses={k: w for k, w in aux.items() if w})   # before the switch: the aux_losses dict


def run_one(a, base:dict, arm:str, seed:int) -> dict:
    "Pretrain, zero-shot and grounding of one arm and seed; returns the headline numbers."
    from medklip.train import pretrain
    from medklip.eval.zeroshot import zeroshot_cli
    from medklip.eval.grounding import ground_cli
    s = dict(base, **arm_settings(arm, a.gkmvlp, a.gkmvlp_attn, a.medfilip), seed=seed, threads=1)
    if a.epochs: s['epochs'] = a.epochs
    if s.get('aux_losses', {}).get('medfilip'):        # the old dict API needs the loss registered (the scalar API does it itself)
        from medklip.methods.medfilip import register_medfilip
        register_medfilip(a.knowledge)
    out = Path(a.work)/f'{arm}_s{seed}'
    if out.exists(): shutil.rmtree(out)
    t = time.time()
    pretrain(a.store, a.triplets, a.knowledge, out/'model', s, log=lambda m: None)
    secs = time.time() - t
    zs, gr = out/'zeroshot.json', out/'grounding.json'
    zeroshot_cli(['--checkpoint', str(out/'model'), '--dataset', 'demo', '--root', a.demo, '--split', 'test', '--val-split', 'validate',
                  '--prompt', 'both', '--n-boot', str(a.n_boot), '--seed', '0', '--out', str(zs), '--scores', str(out/'scores.csv')])
    ground_cli(['--checkpoint', str(out/'model'), '--dataset', 'demo', '--root', a.demo, '--split', 'test', '--out', str(gr)])
    return dict(arm=arm, seed=seed, train_s=round(secs, 1), **headline(json.loads(zs.read_text()), json.loads(gr.read_text()), a.demo))


def headline(z:dict, g:dict, demo) -> dict:
    "Seen mean AUROC, unseen name/description AUROC and difference, grounding of the seen findings, from the two JSONs."
    man = json.loads((Path(demo)/'demo'/'manifest.json').read_text())
    seen, unseen = man['seen_findings'], man['unseen_finding']
    per = z['prompts']['description']['classes']          # seen findings: the entity query, the same under both prompts
    auc = {k: v['auroc']['value'] for k, v in per.items() if k in seen}
    u = z['unseen'].get(unseen, {})
    gs = [v for k, v in g['classes'].items() if k in seen]
    gm = lambda key: float(np.nanmean([v[key] for v in gs if v.get(key) is not None])) if gs else float('nan')
    return dict(seen_auroc=float(np.mean(list(auc.values()))) if auc else float('nan'), seen_per=auc,
                unseen_name=u.get('name_auroc'), unseen_desc=u.get('description_auroc'),
                unseen_diff=(u.get('difference') or {}).get('value'), unseen_diff_ci=(u.get('difference') or {}).get('ci'),
                pointing=gm('pointing_game'), pointing_tolerant=gm('pointing_tolerant'), pointing_cell=gm('pointing_cell'),
                energy=gm('energy'), dice=gm('norm_dice'))


KEYS = ['seen_auroc', 'unseen_name', 'unseen_desc', 'unseen_diff', 'pointing', 'pointing_tolerant', 'pointing_cell', 'energy', 'dice']


def table(runs:list[dict]) -> str:
    "One line per arm: mean ± sd over seeds of every headline number."
    lines = ['arm       n  ' + '  '.join(f'{k:>17}' for k in KEYS)]
    for arm in dict.fromkeys(r['arm'] for r in runs):
        rs = [r for r in runs if r['arm'] == arm]
        cell = lambda k: (lambda x: f'{np.mean(x):.3f} ± {np.std(x, ddof=1) if len(x) > 1 else 0:.3f}')(
            np.array([r[k] for r in rs if r[k] is not None], float))
        lines.append(f'{arm:9} {len(rs)}  ' + '  '.join(f'{cell(k):>17}' for k in KEYS))
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--demo', default=str(REPO/'data'/'demo')); p.add_argument('--store', default=str(REPO/'work'/'store'))
    p.add_argument('--triplets', default=str(REPO/'work'/'triplets.jsonl')); p.add_argument('--knowledge', default=str(REPO/'work'/'knowledge'))
    p.add_argument('--params', default=str(REPO/'params.yaml'), help="file with the pretrain: section")
    p.add_argument('--work', default='/tmp/ablations', help="scratch folder for models and JSONs")
    p.add_argument('--arms', nargs='+', default=list(ARMS), choices=ARMS); p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--epochs', type=int, default=None, help="shorter schedule than params.yaml's (quote it with the numbers)")
    p.add_argument('--gkmvlp', type=float, default=.5); p.add_argument('--gkmvlp-attn', type=float, default=.5, dest='gkmvlp_attn')
    p.add_argument('--medfilip', type=float, default=1.); p.add_argument('--n-boot', type=int, default=1000, dest='n_boot')
    a = p.parse_args()
    from medklip.core import load_params
    base = {k: v for k, v in (load_params(a.params, 'pretrain') or {}).items() if k not in ('aux_losses', 'gkmvlp_weight', 'gkmvlp_attn_weight', 'medfilip_weight')}
    Path(a.work).mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in a.seeds:
        for arm in a.arms:
            r = run_one(a, base, arm, seed); runs.append(r)
            print(f"[{arm} seed {seed}] " + ', '.join(f'{k} {r[k]:.3f}' for k in KEYS if isinstance(r[k], float)), flush=True)
    print(f"epochs: {a.epochs or base.get('epochs')}; seeds {a.seeds}; ± is the sd over seeds")
    print(table(runs))
    print(json.dumps(dict(epochs=a.epochs or base.get('epochs'), runs=runs)))


if __name__ == '__main__':
    main()
