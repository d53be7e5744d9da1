"""Ablation of the MedFILIP soft-target auxiliary loss on the demo corpus: the same pretraining with and without it.

    .venv/bin/python bench/ablation_medfilip.py [--work /tmp/h13] [--epochs N] [--weight 1.0]

Copies the demo corpus (DATA, default data/demo) and the prepared inputs (WORK_SRC/{store,triplets.jsonl,knowledge},
default work/) to --work (the originals are only read), then trains the `pretrain:` settings of params.yaml twice with
the same seed, `aux_losses: {}` and `aux_losses: {medfilip: WEIGHT}` (the finding texts embedded with the knowledge
embeddings' encoder), both arms at once in two processes with one torch thread each. For each model it prints the
held-out existence AUC per seen finding and their mean (bench/demo_auc.py, test split against the generator's labels)
and grounding (`medklip ground`, demo test split: pointing game, IoU/Dice at the stated thresholds), then one JSON line.
--epochs shortens the schedule (default: params.yaml's) when the full one does not fit the time at hand.
"""
from __future__ import annotations
import argparse, importlib.util, json, os, shutil, subprocess, sys, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
REPO = Path(__file__).resolve().parents[1]


def copy_inputs(data:Path, work_src:Path, work:Path):
    "Copy the demo corpus and store/triplets/knowledge to `work` once (read-only originals)."
    work.mkdir(parents=True, exist_ok=True)
    for src, dst in [(data, work/'demo'), (work_src/'store', work/'store'), (work_src/'knowledge', work/'knowledge')]:
        if not dst.exists(): shutil.copytree(src, dst)
    if not (work/'triplets.jsonl').exists(): shutil.copy(work_src/'triplets.jsonl', work/'triplets.jsonl')


def train_arm(work:Path, arm:str, settings:dict, weight:float) -> dict:
    "Pretrain one arm ('off' or 'medfilip') into WORK/model_<arm>."
    from medklip.train import pretrain
    s = dict(settings, threads=1, aux_losses={})
    if arm == 'medfilip':
        from medklip.methods.medfilip import register_medfilip
        register_medfilip(work/'knowledge')
        s['aux_losses'] = {'medfilip': weight}
    out = work/f'model_{arm}'
    if out.exists(): shutil.rmtree(out)
    t = time.time()
    r = pretrain(work/'store', work/'triplets.jsonl', work/'knowledge', out, s, log=lambda m: print(f'[{arm}] {m}', flush=True))
    return dict(arm=arm, seconds=round(time.time() - t, 1), steps=r['steps'], loss=r['loss'], val_auc=r['val_auc'])


def evaluate(work:Path, arm:str) -> dict:
    "Held-out existence AUC (bench/demo_auc.py) and grounding (`medklip ground`) of one trained arm."
    spec = importlib.util.spec_from_file_location('demo_auc', REPO/'bench'/'demo_auc.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    auc = mod.demo_auc(work/f'model_{arm}', work/'store', work/'demo', 'test')
    from medklip.eval.grounding import ground_cli
    gpath = work/f'ground_{arm}.json'
    ground_cli(['--checkpoint', str(work/f'model_{arm}'), '--dataset', 'demo', '--root', str(work/'demo'), '--split', 'test', '--out', str(gpath)])
    g = json.loads(gpath.read_text())
    return dict(auc=auc, grounding=g['overall'], grounding_per_class={k: v['pointing_game'] for k, v in g['classes'].items()})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work', default='/tmp/h13', help='scratch folder for the copies, models and results')
    p.add_argument('--data', default=str(REPO/'data'/'demo'), help='demo corpus (medklip demo-data)')
    p.add_argument('--work-src', default=str(REPO/'work'), help='folder with store/, triplets.jsonl and knowledge/ of that corpus')
    p.add_argument('--params', default=str(REPO/'params.yaml'))
    p.add_argument('--epochs', type=int, default=None, help="override params.yaml's pretrain.epochs")
    p.add_argument('--weight', type=float, default=1.0, help='weight of the medfilip loss')
    p.add_argument('--arm', choices=('off', 'medfilip'), help=argparse.SUPPRESS)   # internal: train one arm and exit
    a = p.parse_args()
    from medklip.core import load_params
    work = Path(a.work)
    settings = dict(load_params(a.params, 'pretrain'))
    if a.epochs: settings['epochs'] = a.epochs
    if a.arm:
        print(json.dumps(train_arm(work, a.arm, settings, a.weight)), flush=True)
        return
    t0 = time.time()
    copy_inputs(Path(a.data), Path(a.work_src), work)
    extra = ['--epochs', str(a.epochs)] if a.epochs else []
    procs = {arm: subprocess.Popen([sys.executable, __file__, '--arm', arm, '--work', str(work), '--params', a.params,
                                    '--weight', str(a.weight), *extra], stdout=subprocess.PIPE, text=True)
             for arm in ('off', 'medfilip')}
    train = {}
    for arm, pr in procs.items():
        lines = pr.stdout.read().strip().splitlines(); pr.wait()
        if pr.returncode: raise SystemExit(f"arm {arm} failed (exit {pr.returncode}):\n" + '\n'.join(lines[-20:]))
        print('\n'.join(lines[:-1]))
        train[arm] = json.loads(lines[-1])
    res = {arm: {**train[arm], **evaluate(work, arm)} for arm in ('off', 'medfilip')}
    seen = list(res['off']['auc']['per_finding'])
    print(f"\nsettings: params.yaml pretrain, epochs {settings['epochs']}, seed {settings.get('seed')}, medfilip weight {a.weight}")
    print(f"{'finding':16s} {'off':>8s} {'medfilip':>9s}")
    for f in seen: print(f"{f:16s} {res['off']['auc']['per_finding'][f]:8.4f} {res['medfilip']['auc']['per_finding'][f]:9.4f}")
    print(f"{'mean AUC':16s} {res['off']['auc']['mean_auc']:8.4f} {res['medfilip']['auc']['mean_auc']:9.4f}")
    for k in ('pointing_game', 'pointing_cell', 'norm_iou', 'norm_dice', 'raw_iou', 'raw_dice'):
        if res['off']['grounding'].get(k) is not None: print(f"{'ground ' + k:16s} {res['off']['grounding'][k]:8.4f} {res['medfilip']['grounding'][k]:9.4f}")
    print(f"{'train seconds':16s} {res['off']['seconds']:8.1f} {res['medfilip']['seconds']:9.1f}")
    print(f"total {time.time() - t0:.0f}s")
    print(json.dumps(dict(epochs=settings['epochs'], weight=a.weight, results=res)))


if __name__ == '__main__':
    main()
