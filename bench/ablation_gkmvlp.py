"""Ablation of the GK-MVLP option (knowledge grounded to anatomy) on the demo corpus: the same pretraining with and without it.

    .venv/bin/python bench/ablation_gkmvlp.py --demo data/demo --triplets work/triplets.jsonl --knowledge work/knowledge \
        --work /tmp/gk [--params params.yaml] [--epochs N] [--align 0.5] [--attn 0.5]

Prepares the demo store with its anatomy maps (`medklip prepare`, the demo's own anatomy folder is picked up) at the
`pretrain.image_size` of the parameter file into WORK/store, then trains the `pretrain:` settings twice with the same
seed, `aux_losses: {}` and `aux_losses: {gkmvlp: ALIGN, gkmvlp_attn: ATTN}`, both arms at once in two processes with one
torch thread each. For each model it prints the held-out existence AUC per seen finding and their mean
(bench/demo_auc.py, test split against the generator's labels) and grounding (`medklip ground`, demo test split:
pointing game, IoU/Dice), then one JSON line. --epochs shortens the schedule when the full one does not fit.
"""
from __future__ import annotations
import argparse, importlib.util, json, os, subprocess, sys, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
REPO = Path(__file__).resolve().parents[1]
MEDKLIP = [sys.executable, '-m', 'medklip.cli']


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--demo', required=True, help='demo corpus (medklip demo-data --out)')
    p.add_argument('--triplets', required=True, help='triplets JSONL of the demo reports (medklip parse-reports)')
    p.add_argument('--knowledge', required=True, help='knowledge embeddings (medklip embed-knowledge)')
    p.add_argument('--work', required=True, help='scratch folder for the store, models and results')
    p.add_argument('--params', default=str(REPO/'params.yaml'), help='parameter file with a pretrain: section')
    p.add_argument('--epochs', type=int, default=None, help='override pretrain.epochs')
    p.add_argument('--align', type=float, default=0.5, help='weight of gkmvlp (region-knowledge alignment)')
    p.add_argument('--attn', type=float, default=0.5, help='weight of gkmvlp_attn (attention inside the region)')
    a = p.parse_args()
    import yaml
    from medklip.core import load_params
    work = Path(a.work); work.mkdir(parents=True, exist_ok=True)
    s = dict(load_params(a.params, 'pretrain') or {})
    if a.epochs: s['epochs'] = a.epochs
    s['threads'] = 1
    if not (work/'store'/'anatomy.npy').exists():
        subprocess.run(MEDKLIP + ['prepare', '--dataset', 'demo', '--root', a.demo, '--out', str(work/'store'),
                                  '--size', str(s.get('image_size', 224)), '--no-progress'], check=True)
    arms = {'off': {}, 'gkmvlp': {k: w for k, w in (('gkmvlp', a.align), ('gkmvlp_attn', a.attn)) if w}}
    procs, t0 = {}, time.time()
    for arm, aux in arms.items():
        (work/f'p_{arm}.yaml').write_text(yaml.safe_dump({'pretrain': {**s, 'aux_losses': aux}}))
        log = open(work/f'train_{arm}.log', 'w')
        procs[arm] = subprocess.Popen(MEDKLIP + ['pretrain', '--store', str(work/'store'), '--triplets', a.triplets, '--knowledge', a.knowledge,
                                                 '--out', str(work/f'model_{arm}'), '--params', str(work/f'p_{arm}.yaml')], stdout=log, stderr=log)
    for arm, pr in procs.items():
        if pr.wait(): raise SystemExit(f"training arm {arm!r} failed; see {work/f'train_{arm}.log'}")
    train_s = round(time.time() - t0)
    spec = importlib.util.spec_from_file_location('demo_auc', REPO/'bench'/'demo_auc.py'); da = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(da)
    res = dict(settings=s, weights=arms['gkmvlp'], train_seconds_both_in_parallel=train_s, arms={})
    for arm in arms:
        gr = work/f'ground_{arm}.json'
        subprocess.run(MEDKLIP + ['ground', '--checkpoint', str(work/f'model_{arm}'), '--dataset', 'demo', '--root', a.demo,
                                  '--split', 'test', '--out', str(gr)], check=True, stdout=subprocess.DEVNULL)
        g = json.loads(gr.read_text())
        seen = {k: v for k, v in g['classes'].items() if k in json.loads((Path(a.demo)/'demo'/'manifest.json').read_text())['seen_findings']}
        n = sum(v['n'] for v in seen.values())
        auc = da.demo_auc(work/f'model_{arm}', work/'store', a.demo, 'test')
        res['arms'][arm] = dict(auc=auc['mean_auc'], auc_per_finding=auc['per_finding'],
                                pointing_game=round(g['overall']['pointing_game'], 4),
                                pointing_game_seen=round(sum(v['pointing_game'] * v['n'] for v in seen.values()) / n, 4),
                                norm_iou=round(g['overall']['norm_iou'], 4), norm_dice=round(g['overall']['norm_dice'], 4),
                                raw_iou=round(g['overall']['raw_iou'], 4), raw_dice=round(g['overall']['raw_dice'], 4),
                                pointing_per_finding={k: round(v['pointing_game'], 3) for k, v in g['classes'].items()})
        r = res['arms'][arm]
        print(f"{arm:8s} AUC {r['auc']:.4f}  pointing {r['pointing_game']:.4f} (seen {r['pointing_game_seen']:.4f})  "
              f"IoU/Dice norm {r['norm_iou']:.4f}/{r['norm_dice']:.4f} raw {r['raw_iou']:.4f}/{r['raw_dice']:.4f}")
    print(json.dumps(res))


if __name__ == '__main__':
    main()
