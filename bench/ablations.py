"""Ablations on the demo corpus over training and world seeds: plain MedKLIP, GK-MVLP, MedFILIP, aspects and all four.

    .venv/bin/python bench/ablations.py [--demo data/demo | --world-seeds 0 1] [--work /tmp/ablations] [--seeds 0 1 2] \
        [--arms plain gkmvlp medfilip aspects all] [--jobs 2] [--epochs N] [--params params.yaml] [--reuse] [--analysis] \
        [--set batch_size=8 ...]

Scoring on validate: `--split validate` scores on the validate split instead of test (for choosing world parameters and
the default arm; thresholds also come from validate). With --reuse, models trained earlier in WORK are scored again
without retraining, so one ablation gives both tables: run it, then rerun it with `--split validate --reuse`.

Smoke test on tiny worlds (minutes on one core; the numbers mean nothing):

    .venv/bin/python bench/ablations.py --world-seeds 0 1 --demo-patients 30 --demo-size 64 --seeds 0 --epochs 1 \
        --arms plain aspects --set batch_size=8 image_size=64 --n-boot 50 --analysis --work /tmp/abl_smoke

Inputs: the demo corpus. Without --world-seeds it is --demo (`medklip demo-data --config params.yaml` writes
data/demo). With --world-seeds W1 W2 ... each world seed gets its own corpus, WORK/world_W/demo, written by
`medklip demo-data --config PARAMS --seed W`. --demo-patients and --demo-size shrink those corpora for a smoke
test. The image store (with the anatomy maps GK-MVLP needs), the triplets and the knowledge embeddings are built
per world into WORK/world_W/ by the pipeline's own commands (`medklip prepare`, `parse-reports`, `embed-knowledge`,
with PARAMS's settings), unless --store/--triplets/--knowledge name existing ones (one world only).

For every world, arm and seed it pretrains (`medklip.train.pretrain`: the `pretrain:` settings of --params with the
arm's method weights and the seed, one torch thread). It then runs zero-shot classification exactly as the DVC stage
does (`medklip zeroshot --prompt all`: test split, validate split for thresholds, name/description/aspects prompts,
paired bootstrap), and grounding (`medklip ground`, test split, PARAMS's thresholds). The two JSONs are reduced
with the functions of `medklip summarize`, so the columns are the numbers `dvc exp show` shows for that run.

Per arm it prints seen AUROC and pointing game (mean ± sd over runs; the sd is run spread, not a CI). For each
unseen finding (the manifest's `unseen_findings`) it prints AUROC by name, description and aspects. Then, per
knowledge prompt, the pooled mean paired difference (prompt − name) over unseen findings × runs, with a
bootstrap 95 % CI. Each bootstrap draw resamples the test images within every run, computes every unseen
finding's AUROC difference on that resample, and averages over findings and runs. This pooled interval is
issue 19's criterion. The last output line is one JSON object with every run. --epochs shortens the schedule
(default: PARAMS's; say so when you quote numbers).

--analysis adds, per world, a small table for each unseen finding: where its description query and its
aspects query land among the seen findings. It shows the cosine similarity of the query embeddings (aspects:
the mean of its aspect phrase embeddings) and of the model's per-image score vectors on the test split, and
names the three nearest seen findings of each. A second table asks, per unseen finding and each of its aspects,
whether that aspect's query fires on the unseen finding's images (AUROC) as it does on the images of the seen
findings that carry the aspect (`aspect_transfer`; mean ± sd over the runs of the aspects and all-four arms):
composition needs both.

Arms (weights settable with --gkmvlp, --gkmvlp-attn, --medfilip, --aspect): plain = every method weight 0;
gkmvlp = gkmvlp_weight 0.5 + gkmvlp_attn_weight 0.5; medfilip = medfilip_weight 1;
aspects = aspect_weight 1; all = the four together.
"""
from __future__ import annotations
import argparse, json, os, shutil, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('OMP_NUM_THREADS', '1'); os.environ.setdefault('MKL_NUM_THREADS', '1')
import numpy as np

REPO = Path(__file__).resolve().parents[1]
ARMS = ('plain', 'gkmvlp', 'medfilip', 'aspects', 'all')
PROMPTS = ('name', 'description', 'aspects')
KNOWLEDGE_PROMPTS = ('description', 'aspects')
METHOD_KEYS = ('gkmvlp_weight', 'gkmvlp_attn_weight', 'medfilip_weight', 'aspect_weight')
THIN = 'pneumothorax'     # the thin finding whose mask-based grounding (energy, grid_topk) is reported beside the rest


def arm_weights(arm:str, gk:float=.5, gk_attn:float=.5, mf:float=1., asp:float=1.) -> dict:
    "The pretrain method weights of an arm (0 = off)."
    on = lambda m: arm in (m, 'all')
    return dict(gkmvlp_weight=gk if on('gkmvlp') else 0., gkmvlp_attn_weight=gk_attn if on('gkmvlp') else 0.,
                medfilip_weight=mf if on('medfilip') else 0., aspect_weight=asp if on('aspects') else 0.)


def _medklip(args):
    from medklip.cli import main as medklip
    rc = medklip(args)
    if rc: raise SystemExit(f"medklip {' '.join(args)} failed with exit {rc}")


def world_dirs(a) -> list[dict]:
    "One dict per world (name, demo corpus, work folder, store/triplets/knowledge to build or given), generating corpora for --world-seeds."
    if not a.world_seeds:
        return [dict(name=f"demo", demo=a.demo, work=Path(a.work), store=a.store, triplets=a.triplets, knowledge=a.knowledge)]
    if a.store or a.triplets or a.knowledge: raise SystemExit("--store/--triplets/--knowledge name one world's inputs; leave them out with --world-seeds")
    out = []
    for w in a.world_seeds:
        d = Path(a.work)/f'world_{w}'
        args = ['demo-data', '--config', a.params, '--seed', str(w), '--out', str(d/'demo')]
        if a.demo_patients: args += ['--n-patients', str(a.demo_patients)]
        if a.demo_size: args += ['--size', *map(str, a.demo_size)]
        _medklip(args)
        out.append(dict(name=f'world{w}', demo=str(d/'demo'), work=d, store=None, triplets=None, knowledge=None))
    return out


def prepare_inputs(W:dict, P:dict) -> dict:
    "Build a world's store, triplets and knowledge embeddings into its work folder unless given (the DVC stages' commands and params)."
    w = Path(W['work']); w.mkdir(parents=True, exist_ok=True)
    if not W['store']:
        W['store'] = str(w/'store')
        if not (w/'store'/'meta.json').exists():
            _medklip(['prepare', '--dataset', 'demo', '--root', W['demo'], '--out', W['store'], '--size', str(P['prepare']['size']), '--workers', '1'])
    if not W['triplets']:
        W['triplets'] = str(w/'triplets.jsonl')
        if not Path(W['triplets']).exists():
            _medklip(['parse-reports', str(Path(W['demo'])/'mimic-cxr-reports'), '--out', W['triplets'], '--stats', str(w/'parse_stats.json'),
                      '--workers', '1', '--probable-as', str(P['parse_reports']['probable_as'])])
    if not W['knowledge']:
        W['knowledge'] = str(w/'knowledge')
        if not (w/'knowledge').exists():
            k = P['knowledge']
            _medklip(['embed-knowledge', '--out', W['knowledge'], '--text-model', k['text_model'], '--pooling', k['pooling'], '--kb-file', k.get('kb_file') or ''])
    return W


def run_one(a, base:dict, G:dict, W:dict, arm:str, seed:int) -> dict:
    "Pretrain, zero-shot (all prompts) and grounding of one world, arm and seed (one torch thread); returns the headline numbers."
    import torch; torch.set_num_threads(1)
    from medklip.train import pretrain
    from medklip.eval.zeroshot import zeroshot_cli
    from medklip.eval.grounding import ground_cli
    s = dict(base, **arm_weights(arm, a.gkmvlp, a.gkmvlp_attn, a.medfilip, a.aspect), seed=seed, threads=1)
    if a.epochs: s['epochs'] = a.epochs
    out = Path(W['work'])/f'{arm}_s{seed}'
    sfx = '' if a.split == 'test' else f'_{a.split}'                 # one model, scored on the test split and (--split validate) on validate
    runf = out/f'run{sfx}.json'
    if a.reuse and runf.exists(): return json.loads(runf.read_text())   # finished earlier with the same inputs
    if a.reuse and (out/'model'/'model.safetensors').exists() and (out/'train_s').exists(): secs = float((out/'train_s').read_text())
    else:
        if out.exists(): shutil.rmtree(out)
        t = time.time()
        pretrain(W['store'], W['triplets'], W['knowledge'], out/'model', s, log=lambda m: None)
        secs = time.time() - t; (out/'train_s').write_text(f"{secs:.1f}")
    zs, gr = out/f'zeroshot{sfx}.json', out/f'grounding{sfx}.json'
    zeroshot_cli(['--checkpoint', str(out/'model'), '--dataset', 'demo', '--root', W['demo'], '--split', a.split, '--val-split', 'validate',
                  '--prompt', 'all', '--n-boot', str(a.n_boot), '--seed', '0', '--batch-size', '32', '--out', str(zs), '--scores', str(out/f'scores{sfx}.csv'),
                  '--kb-file', a.kb_file])
    ground_cli(['--checkpoint', str(out/'model'), '--dataset', 'demo', '--root', W['demo'], '--split', a.split,
                '--raw-threshold', str(G['raw_threshold']), '--norm-threshold', str(G['norm_threshold']), '--tolerance', str(G['tolerance']),
                '--out', str(gr)])
    r = dict(world=W['name'], arm=arm, seed=seed, split=a.split, train_s=round(secs, 1), dir=str(out), scores=str(out/f'scores{sfx}.csv'), **headline(json.loads(zs.read_text()), json.loads(gr.read_text())))
    runf.write_text(json.dumps(r))
    return r


def headline(z:dict, g:dict) -> dict:
    "`medklip summarize`'s demo numbers of one run, per-finding AUROC (seen) and per-prompt AUROC with paired intervals (unseen)."
    from medklip.eval.summary import zeroshot_headline, grounding_headline
    out = {**zeroshot_headline(z), **grounding_headline(g)}
    p = z['prompts'].get('description') or next(iter(z['prompts'].values()))
    un = z.get('unseen') or {}
    out['seen_per'] = {k: (v.get('auroc') or {}).get('value') for k, v in p['classes'].items() if k not in un}
    out['seen_per_hi'] = {k: ((v.get('auroc') or {}).get('ci') or [None, None])[1] for k, v in p['classes'].items() if k not in un}
    if 'aspects' in z['prompts']:   # seen findings asked by their aspects too (an analysis, not a target)
        out['seen_auroc_aspects'] = ((z['prompts']['aspects'].get('macro_seen') or {}).get('auroc') or {}).get('value')
    out['unseen'] = {f: dict(auroc={q: (u.get('auroc') or {}).get(q) or dict(value=u.get(f'{q}_auroc')) for q in PROMPTS if f'{q}_auroc' in u},
                             diff={q: u.get('difference' if q == 'description' else f'{q}_difference') for q in KNOWLEDGE_PROMPTS
                                   if u.get('difference' if q == 'description' else f'{q}_difference')})
                     for f, u in un.items()}
    th = g['classes'].get(THIN) or {}
    out.update(thin_strict=th.get('pointing_strict'), thin_tolerant=th.get('pointing_tolerant'), thin_energy=th.get('energy'),
               thin_energy_lift=th.get('energy_lift'), thin_grid_topk=th.get('grid_topk'), thin_grid_chance=th.get('grid_chance'))
    return out


def pooled_difference(runs:list[dict], prompt:str, n_boot:int=1000, seed:int=0) -> dict:
    """Mean paired AUROC difference (prompt − name) over unseen findings × runs, and its bootstrap 95 % CI (images resampled
    within each run); the prompt's own pooled AUROC with the same draws (`auroc`, `auroc_ci`); and a CI with the runs as
    the random unit (`run_ci`: Student t over the per-run mean differences, which the image bootstrap leaves out)."""
    from medklip.eval.metrics import weighted_auroc, bootstrap_weights, percentile_ci
    import pandas as pd
    point, boot, apoint, aboot = [], [], [], []
    for i, r in enumerate(runs):
        df = pd.read_csv(r.get('scores') or Path(r['dir'])/'scores.csv')
        per_run_point, per_run_boot, per_run_auc, per_run_aboot = [], [], [], []
        for f in r['unseen']:
            cols = [f'label:{f}', f'score:{f}:name', f'score:{f}:{prompt}']
            if not all(c in df for c in cols): continue
            d = df[cols].dropna(); y = d[cols[0]].to_numpy()
            if len(set(y.tolist())) < 2: continue
            sn, sk = d[cols[1]].to_numpy(), d[cols[2]].to_numpy()
            ak = float(weighted_auroc(sk, y)[0])
            per_run_point.append(ak - float(weighted_auroc(sn, y)[0])); per_run_auc.append(ak)
            if n_boot:
                w = np.concatenate(list(bootstrap_weights(len(y), n_boot, seed + i)))   # the same draws for both prompts of a run
                bk = weighted_auroc(sk, y, w)
                per_run_boot.append(bk - weighted_auroc(sn, y, w)); per_run_aboot.append(bk)
        if per_run_point:
            point.append(per_run_point); apoint.append(per_run_auc)
            if n_boot: boot.append(np.stack(per_run_boot)); aboot.append(np.stack(per_run_aboot))   # (findings, n_boot)
    if not point: return dict(value=None, ci=None, n_runs=0, n_pairs=0, auroc=None, auroc_ci=None, run_ci=None)
    value = float(np.mean([x for p in point for x in p]))
    ci = percentile_ci(np.nanmean(np.concatenate(boot), 0)) if n_boot else None   # per draw: mean over findings and runs
    auroc = float(np.mean([x for p in apoint for x in p]))
    auroc_ci = percentile_ci(np.nanmean(np.concatenate(aboot), 0)) if n_boot else None
    per_run = np.array([np.mean(p) for p in point]); run_ci = None
    if len(per_run) > 1:
        from scipy.stats import t
        h = float(t.ppf(.975, len(per_run) - 1) * per_run.std(ddof=1) / np.sqrt(len(per_run)))
        run_ci = [float(per_run.mean() - h), float(per_run.mean() + h)]
    return dict(value=value, ci=ci, n_runs=len(point), n_pairs=sum(len(p) for p in point), auroc=auroc, auroc_ci=auroc_ci, run_ci=run_ci)


def ms(xs) -> str:
    x = np.array([v for v in xs if v is not None], float)
    if not len(x): return 'n/a'
    return f'{x.mean():.3f} ± {x.std(ddof=1) if len(x) > 1 else 0:.3f}'


def _v(x): return x.get('value') if isinstance(x, dict) else x


def arm_table(runs:list[dict]) -> str:
    "Per arm: runs, seen AUROC (description; aspects), pointing game, unseen mean AUROC per prompt, mean ± sd over runs (markdown)."
    keys = [('seen AUROC', 'seen_auroc'), ('seen by aspects', 'seen_auroc_aspects'), ('point strict', 'pointing_game'),
            ('point toler.', 'pointing_tolerant'), ('unseen name', 'unseen_auroc_name'), ('unseen desc', 'unseen_auroc_desc'),
            ('unseen aspects', 'unseen_auroc_aspects'), ('desc-name', 'unseen_desc_minus_name'), ('aspects-name', 'unseen_aspects_minus_name')]
    lines = ['| arm | runs | ' + ' | '.join(k for k, _ in keys) + ' |', '|---|---|' + '---|' * len(keys)]
    for arm in dict.fromkeys(r['arm'] for r in runs):
        rs = [r for r in runs if r['arm'] == arm]
        lines.append(f"| {arm} | {len(rs)} | " + ' | '.join(ms([r.get(k) for r in rs]) for _, k in keys) + ' |')
    return '\n'.join(lines)


def unseen_table(runs:list[dict]) -> str:
    "Per arm and unseen finding: AUROC by each prompt and each knowledge prompt − name (mean ± sd over runs), and how many run CIs exclude 0."
    lines = ['| arm | unseen finding | runs | name | description | aspects | desc−name | aspects−name | paired CIs > 0 (desc, aspects) |', '|---|---|---|---|---|---|---|---|---|']
    for arm in dict.fromkeys(r['arm'] for r in runs):
        rs = [r for r in runs if r['arm'] == arm]
        for f in dict.fromkeys(f for r in rs for f in r.get('unseen', {})):
            us = [r['unseen'][f] for r in rs if f in r.get('unseen', {})]
            au = lambda q: ms([_v(u['auroc'].get(q)) for u in us])
            df = lambda q: ms([_v(u['diff'].get(q)) for u in us])
            above = lambda q: sum(1 for u in us if ((u['diff'].get(q) or {}).get('ci') or [0])[0] > 0)
            lines.append(f"| {arm} | {f} | {len(us)} | {au('name')} | {au('description')} | {au('aspects')} | {df('description')} | {df('aspects')} | "
                         f"{above('description')}, {above('aspects')} of {len(us)} |")
    return '\n'.join(lines)


def pooled_table(runs:list[dict], n_boot:int) -> tuple[str, dict]:
    """Per arm and knowledge prompt: the pooled mean paired difference over unseen findings × runs with its bootstrap CI and
    the prompt's pooled AUROC with its CI (issue 19's criterion: both intervals above 0 and 0.5), and the difference's CI
    with the runs as the random unit."""
    f2 = lambda ci: f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else 'n/a'
    lines, res = ['| arm | prompt | runs | pairs | mean (prompt − name) | 95 % CI (images) | 95 % CI (runs) | prompt AUROC [95 % CI] | criterion met (images; also runs) |',
                  '|---|---|---|---|---|---|---|---|---|'], {}
    for arm in dict.fromkeys(r['arm'] for r in runs):
        rs = [r for r in runs if r['arm'] == arm]
        for q in KNOWLEDGE_PROMPTS:
            p = res.setdefault(arm, {})[q] = pooled_difference(rs, q, n_boot)
            ci, aci, rci = p['ci'], p['auroc_ci'], p['run_ci']
            met = bool(ci and aci and ci[0] > 0 and aci[0] > .5)
            lines.append(f"| {arm} | {q} | {p['n_runs']} | {p['n_pairs']} | " + (f"{p['value']:+.3f}" if p['value'] is not None else 'n/a')
                         + f" | {f2(ci)} | {f2(rci)} | " + (f"{p['auroc']:.3f} [{aci[0]:.3f}, {aci[1]:.3f}]" if aci else 'n/a')
                         + ' | ' + ('yes' if met else 'no') + ('; ' + ('yes' if rci and rci[0] > 0 else 'no') if met else '') + ' |')
    return '\n'.join(lines), res


def landing(W:dict, run:dict, k:int=3, kb_file:str='') -> str:
    "Where each unseen finding's description and aspects queries land among the seen findings: query-embedding and score-vector cosine (markdown)."
    import pandas as pd, torch
    from medklip.data.demo import read_manifest
    from medklip.text.embed import load_knowledge_embeddings
    from medklip.text.knowledge import load_knowledge
    from medklip.eval.infer import resolve_query
    man, ke, kb = read_manifest(W['demo']) or {}, load_knowledge_embeddings(W['knowledge']), load_knowledge(kb_file or None)
    df = pd.read_csv(run.get('scores') or Path(run['dir'])/'scores.csv')
    seen = [f for f in man.get('seen_findings', []) if f'score:{f}:description' in df]
    unit = lambda v: torch.nn.functional.normalize(torch.as_tensor(v, dtype=torch.float32), dim=-1)
    def emb(f, prompt):
        q = resolve_query(f, 'demo', prompt, kb)
        if q is None: return None
        if q.kind == 'aspects': return ke.aspect_emb[[ke.aspect_names.index(n) for n in q.aspects]].mean(0) if ke.aspect_names else None
        if q.kind == 'entity': return ke.entity_emb[ke.entity_names.index(q.target)]
        return ke.extra_emb[ke.extra_names.index(q.target)] if q.target in ke.extra_names else None
    S = {q: {f: emb(f, q) for f in seen} for q in KNOWLEDGE_PROMPTS}   # seen findings' queries of the same prompt: like is compared with like
    sv = lambda col: (df[col] - df[col].mean()).to_numpy() / (df[col].std(ddof=0) + 1e-9)   # the dot product / n is Pearson's r
    lines = [f"world {W['name']}, run {run['arm']} seed {run['seed']}: nearest seen findings, asked by the same prompt "
             f"(query embeddings: cosine; per-image test scores: Pearson r)",
             '| unseen finding | query | by query embedding | by per-image scores |', '|---|---|---|---|']
    for f in man.get('unseen_findings', []):
        for prompt in KNOWLEDGE_PROMPTS:
            e, col = emb(f, prompt), f'score:{f}:{prompt}'
            if e is None or col not in df: continue
            ce = {g: float(unit(e) @ unit(S[prompt][g])) for g in seen if S[prompt][g] is not None}
            cs = {g: float(np.dot(sv(col), sv(f'score:{g}:{prompt}')) / len(df)) for g in seen if f'score:{g}:{prompt}' in df}
            top = lambda d: ', '.join(f"{g} {v:+.2f}" for g, v in sorted(d.items(), key=lambda x: -x[1])[:k])
            lines.append(f"| {f} | {prompt} | {top(ce)} | {top(cs)} |")
    return '\n'.join(lines)


def aspect_aurocs(lab, S, names:list, asp:dict, seen:list, unseen:list) -> list[dict]:
    """Rows of `aspect_transfer`: `lab` a DataFrame of 0/1 labels (a column per finding), `S` (n_images, len(names)) scores of
    the aspect queries `names`, `asp` {finding: its aspects}. Positives: the unseen finding's images without a seen carrier
    of the aspect, or a seen carrier's images without the unseen finding; negatives: images with no finding that carries it."""
    from sklearn.metrics import roc_auc_score
    def auc(pos, neg, s):
        y = np.r_[np.ones(pos.sum()), np.zeros(neg.sum())]
        return roc_auc_score(y, np.r_[s[pos], s[neg]]) if pos.sum() and neg.sum() else float('nan')
    out = []
    for f in unseen:
        for a in asp.get(f, ()):
            j, carriers = names.index(a), [g for g in seen if a in asp.get(g, ())]
            has = lab[[g for g in seen + unseen if a in asp.get(g, ())]].to_numpy().max(1) == 1
            sc = lab[carriers].to_numpy().max(1) == 1 if carriers else np.zeros(len(lab), bool)
            pu, ps = (lab[f].to_numpy() == 1) & ~sc, sc & (lab[f].to_numpy() != 1)   # one kind of carrier each, never both
            out.append(dict(finding=f, aspect=a, carriers=carriers, unseen_auroc=auc(pu, ~has, S[:, j]), n_unseen=int(pu.sum()),
                            seen_auroc=auc(ps, ~has, S[:, j]), n_seen=int(ps.sum())))
    return out


def aspect_transfer(W:dict, runs:list, split:str='test', kb_file:str='') -> str:
    """Per unseen finding and each of its aspects: does that aspect's query fire on the unseen finding's images? AUROC of the
    aspect query's score with the unseen finding's images as positives (those without a seen finding that carries the
    aspect), and, for comparison, with the images of the seen findings that carry the aspect as positives (without the
    unseen finding); negatives in both are the images with no finding (seen or unseen) that carries it. An aspect
    detector that learned the attribute scores both high; one that learned its seen carriers' looks scores only the
    second. One row per arm, unseen finding and aspect: mean ± sd over the given runs of that world (markdown; the
    per-run rows are `aspect_aurocs`)."""
    import pandas as pd, torch
    from medklip.data.demo import read_manifest
    from medklip.eval.infer import Query, load_model, query_set, resolve_query, score_images
    from medklip.text.knowledge import load_knowledge
    man, kb = read_manifest(W['demo']) or {}, load_knowledge(kb_file or None)
    seen, unseen = man.get('seen_findings', []), man.get('unseen_findings', [])
    asp = {f: q.aspects for f in seen + unseen if (q := resolve_query(f, 'demo', 'aspects', kb)) is not None and q.kind == 'aspects'}
    idx = pd.read_csv(Path(W['store'])/'index.csv'); idx = idx[idx.split == split]
    lab = pd.read_csv(Path(W['demo'])/'demo'/'labels.csv').set_index('dicom_id').loc[idx.image_id]
    names = sorted({a for f in unseen for a in asp.get(f, ())})
    if not names or not runs: return ''
    X = np.asarray(np.load(Path(W['store'])/'images.npy', mmap_mode='r')[idx.row.to_numpy()])   # the split's images, read once for every run
    torch.set_num_threads(1)
    rows = []
    for run in runs:
        model, meta = load_model(Path(run['dir'])/'model')
        qs = query_set([Query(n, '', 'aspects', n, 'aspects', (n,)) for n in names], meta, kb=kb)   # each aspect alone (its own geometric mean)
        S = np.concatenate([score_images(model, X[i:i + 64], qs, meta)[0] for i in range(0, len(X), 64)])
        rows += [dict(r, arm=run['arm'], seed=run['seed']) for r in aspect_aurocs(lab, S, names, asp, seen, unseen)]
    df = pd.DataFrame(rows)
    tags = ', '.join(sorted({f"{r['arm']} s{r['seed']}" for r in runs}))
    lines = [f"world {W['name']}, {split} split, runs {tags}: each unseen finding's aspect "
             f"queries, AUROC on the unseen finding's images vs on the images of the seen findings that carry the aspect (each without "
             f"the other; negatives: images with no finding that carries it); mean ± sd over runs, n = mean positives",
             '| arm | unseen finding | aspect | on the unseen finding (n) | on its seen carriers (n) | seen carriers |', '|---|---|---|---|---|---|']
    for (arm, f, a), g in df.groupby(['arm', 'finding', 'aspect'], sort=False):
        lines.append(f"| {arm} | {f} | {a} | {ms(g.unseen_auroc.dropna())} ({g.n_unseen.mean():.0f}) | {ms(g.seen_auroc.dropna())} ({g.n_seen.mean():.0f}) | "
                     f"{', '.join(g.carriers.iloc[0])} |")
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--demo', default=str(REPO/'data'/'demo'), help='demo corpus (medklip demo-data); ignored with --world-seeds')
    p.add_argument('--world-seeds', nargs='+', type=int, dest='world_seeds', help="demo world seeds: each generates its own corpus in WORK/world_SEED")
    p.add_argument('--demo-patients', type=int, dest='demo_patients', help="--n-patients of the generated worlds (default: PARAMS's)")
    p.add_argument('--demo-size', type=int, nargs='+', dest='demo_size', help="--size of the generated worlds (default: PARAMS's)")
    p.add_argument('--store'); p.add_argument('--triplets'); p.add_argument('--knowledge')
    p.add_argument('--params', default=str(REPO/'params.yaml'), help="file with the pretrain:, grounding: (and demo_data:, prepare: ...) sections")
    p.add_argument('--work', default='/tmp/ablations', help="scratch folder for inputs, models and JSONs")
    p.add_argument('--arms', nargs='+', default=list(ARMS), choices=ARMS); p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--jobs', type=int, default=1, help="runs at once (one torch thread each)")
    p.add_argument('--epochs', type=int, default=None, help="shorter schedule than params.yaml's (quote it with the numbers)")
    p.add_argument('--gkmvlp', type=float, default=.5); p.add_argument('--gkmvlp-attn', type=float, default=.5, dest='gkmvlp_attn')
    p.add_argument('--medfilip', type=float, default=1.); p.add_argument('--aspect', type=float, default=1.)
    p.add_argument('--reuse', action='store_true', help="keep runs that finished in WORK before (their run.json) instead of retraining")
    p.add_argument('--n-boot', type=int, default=1000, dest='n_boot')
    p.add_argument('--split', default='test', choices=['test', 'validate'],
                   help="split scored (validate: for choosing world parameters; thresholds then come from validate too)")
    p.add_argument('--analysis', action='store_true', help="also print where the unseen findings' queries land among the seen ones")
    p.add_argument('--set', nargs='+', default=[], metavar='KEY=VALUE', help="override pretrain settings (YAML values), e.g. batch_size=8 for a tiny smoke test")
    a = p.parse_args()
    from medklip.core import load_params, parse_overrides
    P = load_params(a.params)
    a.kb_file = str((P.get('knowledge') or {}).get('kb_file') or '')   # the knowledge file training embedded is the one zero-shot asks by
    base = {k: v for k, v in {**(P.get('pretrain') or {}), **parse_overrides(a.set)}.items() if k not in METHOD_KEYS}
    G = P.get('grounding') or {}
    G = dict(raw_threshold=G.get('raw_threshold', .008), norm_threshold=G.get('norm_threshold', .5), tolerance=G.get('tolerance', 0))
    Path(a.work).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    worlds = [prepare_inputs(W, P) for W in world_dirs(a)]
    jobs = [(W, arm, seed) for W in worlds for seed in a.seeds for arm in a.arms]
    runs = []
    def done(r):
        runs.append(r)
        un = '; '.join(f"{f} " + '/'.join(f"{_v(u['auroc'].get(q)):.3f}" for q in PROMPTS if u['auroc'].get(q)) for f, u in r.get('unseen', {}).items())
        print(f"[{r['world']} {r['arm']} seed {r['seed']}] train {r['train_s']:.0f}s, seen AUROC {r.get('seen_auroc') or float('nan'):.3f}, "
              f"pointing {r.get('pointing_game') or float('nan'):.3f}, unseen name/desc/aspects {un}", flush=True)
    if a.jobs > 1:
        import multiprocessing as mp
        with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context('spawn')) as ex:
            for f in [ex.submit(run_one, a, base, G, W, arm, seed) for W, arm, seed in jobs]: done(f.result())
    else:
        for W, arm, seed in jobs: done(run_one(a, base, G, W, arm, seed))
    runs.sort(key=lambda r: (r['world'], ARMS.index(r['arm']), r['seed']))
    print(f"\nepochs: {a.epochs or base.get('epochs')}; worlds {[W['name'] for W in worlds]}; training seeds {a.seeds}; ± is the sd over runs; "
          f"wall {time.time() - t0:.0f}s")
    print(arm_table(runs)); print(); print(unseen_table(runs)); print()
    pooled, res = pooled_table(runs, a.n_boot)
    print(pooled)
    if a.analysis:
        for W in worlds:
            rs = [r for r in runs if r['world'] == W['name']]
            best = next((r for r in rs if r['arm'] == 'aspects'), rs[0])
            print(); print(landing(W, best, kb_file=a.kb_file))
            trained = [r for r in rs if r['arm'] in ('aspects', 'all')] or [best]   # runs whose aspect queries were trained
            print(); print(aspect_transfer(W, trained, a.split, a.kb_file))
    print(json.dumps(dict(epochs=a.epochs or base.get('epochs'), worlds=[W['name'] for W in worlds], seeds=a.seeds, pooled=res, runs=runs)))


if __name__ == '__main__':
    main()
