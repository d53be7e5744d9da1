"""Ablations on the demo corpus over seeds: plain MedKLIP, GK-MVLP, MedFILIP and both, mean ± spread.

    .venv/bin/python bench/ablations.py [--demo data/demo] [--work /tmp/ablations] [--seeds 0 1 2] \
        [--arms plain gkmvlp medfilip both] [--jobs 2] [--epochs N] [--params params.yaml] [--reuse]

Inputs: the demo corpus (`medklip demo-data --config params.yaml` writes data/demo). The image store (with its
anatomy maps, which GK-MVLP needs), the triplets and the knowledge embeddings are built into WORK by the pipeline's
own commands (`medklip prepare`, `parse-reports`, `embed-knowledge`, with params.yaml's settings) unless
--store/--triplets/--knowledge name existing ones (e.g. the DVC outputs work/store, work/triplets.jsonl, work/knowledge).

For every arm and seed it pretrains (`medklip.train.pretrain`, the `pretrain:` settings of --params with the arm's
method weights and the seed, one torch thread), then runs zero-shot classification (`medklip zeroshot`: test split,
validate split for thresholds, name and description prompts, paired bootstrap) and grounding (`medklip ground`, test
split, params.yaml's thresholds) exactly as the DVC stages do, and reduces the two JSONs with the functions of
`medklip summarize` — so the columns are the numbers `dvc exp show` shows for that run — plus per-finding AUROC and
the thin-finding (pneumothorax) mask metrics. --jobs runs that many (arm, seed) runs at once, one thread each.

It prints one line per run, then per arm the mean ± sd over seeds (the sd is the seed spread, not a CI), then one JSON
object with every run. --epochs shortens the schedule (default: params.yaml's; say so when you quote numbers).
Arms: plain = gkmvlp_weight = gkmvlp_attn_weight = medfilip_weight = 0; gkmvlp = 0.5 / 0.5 / 0 (the demo default);
medfilip = 0 / 0 / 1; both = 0.5 / 0.5 / 1 (weights settable with --gkmvlp, --gkmvlp-attn, --medfilip).
"""
from __future__ import annotations
import argparse, json, os, shutil, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('OMP_NUM_THREADS', '1'); os.environ.setdefault('MKL_NUM_THREADS', '1')
import numpy as np

REPO = Path(__file__).resolve().parents[1]
ARMS = ('plain', 'gkmvlp', 'medfilip', 'both')
THIN = 'pneumothorax'     # the thin finding whose mask-based grounding (energy, grid_topk) is reported beside the rest


def arm_weights(arm:str, gk:float=.5, gk_attn:float=.5, mf:float=1.) -> dict:
    "The pretrain method weights of an arm (0 = off)."
    on_gk, on_mf = arm in ('gkmvlp', 'both'), arm in ('medfilip', 'both')
    return dict(gkmvlp_weight=gk if on_gk else 0., gkmvlp_attn_weight=gk_attn if on_gk else 0., medfilip_weight=mf if on_mf else 0.)


def prepare_inputs(a, P:dict) -> None:
    "Build the store, triplets and knowledge embeddings into --work unless given (the DVC stages' commands and params)."
    from medklip.cli import main as medklip
    w = Path(a.work)
    def run(args):
        rc = medklip(args)
        if rc: raise SystemExit(f"medklip {' '.join(args)} failed with exit {rc}")
    if not a.store:
        a.store = str(w/'store')
        if not (w/'store'/'meta.json').exists():
            run(['prepare', '--dataset', 'demo', '--root', a.demo, '--out', a.store, '--size', str(P['prepare']['size']), '--workers', '1'])
    if not a.triplets:
        a.triplets = str(w/'triplets.jsonl')
        if not Path(a.triplets).exists():
            run(['parse-reports', str(Path(a.demo)/'mimic-cxr-reports'), '--out', a.triplets, '--stats', str(w/'parse_stats.json'),
                 '--workers', '1', '--probable-as', str(P['parse_reports']['probable_as'])])
    if not a.knowledge:
        a.knowledge = str(w/'knowledge')
        if not (w/'knowledge').exists():
            k = P['knowledge']
            run(['embed-knowledge', '--out', a.knowledge, '--text-model', k['text_model'], '--pooling', k['pooling'], '--kb-file', k.get('kb_file') or ''])


def run_one(a, base:dict, G:dict, arm:str, seed:int) -> dict:
    "Pretrain, zero-shot and grounding of one arm and seed (one torch thread); returns the headline numbers."
    import torch; torch.set_num_threads(1)
    from medklip.train import pretrain
    from medklip.eval.zeroshot import zeroshot_cli
    from medklip.eval.grounding import ground_cli
    s = dict(base, **arm_weights(arm, a.gkmvlp, a.gkmvlp_attn, a.medfilip), seed=seed, threads=1)
    if a.epochs: s['epochs'] = a.epochs
    out = Path(a.work)/f'{arm}_s{seed}'
    if a.reuse and (out/'run.json').exists(): return json.loads((out/'run.json').read_text())   # finished earlier with the same inputs
    if out.exists(): shutil.rmtree(out)
    t = time.time()
    pretrain(a.store, a.triplets, a.knowledge, out/'model', s, log=lambda m: None)
    secs = time.time() - t
    zs, gr = out/'zeroshot.json', out/'grounding.json'
    zeroshot_cli(['--checkpoint', str(out/'model'), '--dataset', 'demo', '--root', a.demo, '--split', 'test', '--val-split', 'validate',
                  '--prompt', 'both', '--n-boot', str(a.n_boot), '--seed', '0', '--batch-size', '32', '--out', str(zs), '--scores', str(out/'scores.csv')])
    ground_cli(['--checkpoint', str(out/'model'), '--dataset', 'demo', '--root', a.demo, '--split', 'test',
                '--raw-threshold', str(G['raw_threshold']), '--norm-threshold', str(G['norm_threshold']), '--tolerance', str(G['tolerance']),
                '--out', str(gr)])
    r = dict(arm=arm, seed=seed, train_s=round(secs, 1), **headline(json.loads(zs.read_text()), json.loads(gr.read_text())))
    (out/'run.json').write_text(json.dumps(r))
    return r


def headline(z:dict, g:dict) -> dict:
    "`medklip summarize`'s demo numbers of one run (what `dvc exp show` shows), per-finding AUROC and the thin finding's mask metrics."
    from medklip.eval.summary import zeroshot_headline, grounding_headline
    out = {**zeroshot_headline(z), **grounding_headline(g)}
    p = z['prompts'].get('description') or next(iter(z['prompts'].values()))
    out['seen_per'] = {k: v['auroc']['value'] for k, v in p['classes'].items() if k not in z.get('unseen', {})}
    out['seen_per_hi'] = {k: v['auroc']['ci'][1] for k, v in p['classes'].items() if k not in z.get('unseen', {})}
    th = g['classes'].get(THIN) or {}
    out.update(thin_strict=th.get('pointing_strict'), thin_tolerant=th.get('pointing_tolerant'), thin_energy=th.get('energy'),
               thin_energy_lift=th.get('energy_lift'), thin_grid_topk=th.get('grid_topk'), thin_grid_chance=th.get('grid_chance'))
    u = next(iter(z.get('unseen', {}).values()), {})
    out['unseen_diff_ci'] = (u.get('difference') or {}).get('ci')
    return out


KEYS = ['seen_auroc', 'unseen_auroc_name', 'unseen_auroc_desc', 'unseen_desc_minus_name', 'pointing_game', 'pointing_tolerant',
        'pointing_cell', 'energy', 'dice', 'thin_energy', 'thin_grid_topk']
SHORT = dict(seen_auroc='seen AUROC', unseen_auroc_name='unseen name', unseen_auroc_desc='unseen desc', unseen_desc_minus_name='desc-name',
             pointing_game='point strict', pointing_tolerant='point toler.', pointing_cell='point cell', energy='energy', dice='Dice',
             thin_energy='PTX energy', thin_grid_topk='PTX grid_topk')


def ms(xs) -> str:
    x = np.array([v for v in xs if v is not None], float)
    if not len(x): return 'n/a'
    return f'{x.mean():.3f} ± {x.std(ddof=1) if len(x) > 1 else 0:.3f}'


def table(runs:list[dict]) -> str:
    "One line per arm: mean ± sd over seeds of every headline number (markdown)."
    lines = ['| arm | seeds | ' + ' | '.join(SHORT[k] for k in KEYS) + ' |', '|---|---|' + '---|'*len(KEYS)]
    for arm in dict.fromkeys(r['arm'] for r in runs):
        rs = [r for r in runs if r['arm'] == arm]
        lines.append(f"| {arm} | {len(rs)} | " + ' | '.join(ms([r.get(k) for r in rs]) for k in KEYS) + ' |')
    return '\n'.join(lines)


def per_finding(runs:list[dict]) -> str:
    "Seen-finding AUROC per arm, mean ± sd over seeds (markdown)."
    names = list(runs[0]['seen_per'])
    lines = ['| arm | ' + ' | '.join(names) + ' |', '|---|' + '---|'*len(names)]
    for arm in dict.fromkeys(r['arm'] for r in runs):
        rs = [r for r in runs if r['arm'] == arm]
        lines.append(f'| {arm} | ' + ' | '.join(ms([r['seen_per'].get(n) for r in rs]) for n in names) + ' |')
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--demo', default=str(REPO/'data'/'demo'), help='demo corpus (medklip demo-data)')
    p.add_argument('--store'); p.add_argument('--triplets'); p.add_argument('--knowledge')
    p.add_argument('--params', default=str(REPO/'params.yaml'), help="file with the pretrain:, grounding: (and prepare: ...) sections")
    p.add_argument('--work', default='/tmp/ablations', help="scratch folder for inputs, models and JSONs")
    p.add_argument('--arms', nargs='+', default=list(ARMS), choices=ARMS); p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--jobs', type=int, default=1, help="runs at once (one torch thread each)")
    p.add_argument('--epochs', type=int, default=None, help="shorter schedule than params.yaml's (quote it with the numbers)")
    p.add_argument('--gkmvlp', type=float, default=.5); p.add_argument('--gkmvlp-attn', type=float, default=.5, dest='gkmvlp_attn')
    p.add_argument('--reuse', action='store_true', help="keep runs that finished in WORK before (their run.json) instead of retraining")
    p.add_argument('--medfilip', type=float, default=1.); p.add_argument('--n-boot', type=int, default=1000, dest='n_boot')
    a = p.parse_args()
    from medklip.core import load_params
    P = load_params(a.params)
    base = {k: v for k, v in (P.get('pretrain') or {}).items() if k not in ('gkmvlp_weight', 'gkmvlp_attn_weight', 'medfilip_weight')}
    G = P.get('grounding') or {}
    G = dict(raw_threshold=G.get('raw_threshold', .008), norm_threshold=G.get('norm_threshold', .5), tolerance=G.get('tolerance', 0))
    Path(a.work).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    prepare_inputs(a, P)
    jobs = [(arm, seed) for seed in a.seeds for arm in a.arms]
    runs = []
    def done(r):
        runs.append(r)
        print(f"[{r['arm']} seed {r['seed']}] train {r['train_s']:.0f}s, " +
              ', '.join(f'{SHORT[k]} {r[k]:.3f}' for k in KEYS if isinstance(r.get(k), float)), flush=True)
    if a.jobs > 1:
        import multiprocessing as mp
        with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context('spawn')) as ex:
            for f in [ex.submit(run_one, a, base, G, arm, seed) for arm, seed in jobs]: done(f.result())
    else:
        for arm, seed in jobs: done(run_one(a, base, G, arm, seed))
    runs.sort(key=lambda r: (ARMS.index(r['arm']), r['seed']))
    print(f"\nepochs: {a.epochs or base.get('epochs')}; seeds {a.seeds}; ± is the sd over seeds; wall {time.time() - t0:.0f}s")
    print(table(runs)); print(); print(per_finding(runs))
    print(json.dumps(dict(epochs=a.epochs or base.get('epochs'), seeds=a.seeds, runs=runs)))


if __name__ == '__main__':
    main()
