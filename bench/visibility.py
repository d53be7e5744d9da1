"""Is each demo finding visible to the trained trunk? A supervised linear probe per finding, no knowledge involved.

    .venv/bin/python bench/visibility.py --work /tmp/ablations --world-seeds 0 1 [--arm plain] [--seed 0] [--split validate]

For every world WORK/world_W (as `bench/ablations.py --world-seeds` leaves it: demo/, store/ and ARM_sSEED/model), it
takes the split's stored images, runs the trained model's trunk (`MedKLIP.patches`: every patch's projected feature, in
place) and fits, for each finding with at least 10 positives, a logistic regression on those features to the finding's
own labels; the AUROC of its 5-fold cross-validated predictions says how well the features carry the finding. The same
probe on the raw pixels (downsampled to 32 x 32) says whether the finding is in the image at all.

This is the demo world's rule for the unseen findings' visibility (`medklip/resources/demo_world.yaml`, header): the seen
findings' visibility is set from plain MedKLIP's zero-shot AUROC, which an unseen finding does not have (no report names
it), so each unseen finding must instead be found by the probe on plain MedKLIP's trunk at least as well as the seen
findings' 10th percentile. A zero-shot test of an unseen finding that the trunk cannot see measures nothing about
knowledge. The probe fits labels, so it only ever runs on validate (world parameters are chosen there).

Prints, per world, the seen findings' probe quantiles and every unseen finding's probe AUROC with its verdict, then one
line of JSON with all AUROCs.
"""
from __future__ import annotations
import argparse, json
from pathlib import Path
import numpy as np


def probe_auroc(F:np.ndarray, y:np.ndarray, folds:int=5, C:float=.01, seed:int=0) -> float:
    "AUROC of a standardised, L2-regularised logistic regression's `folds`-fold cross-validated predictions of `y` from `F`."
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=300))
    p = cross_val_predict(clf, F, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method='predict_proba')[:, 1]
    return float(roc_auc_score(y, p))


def trunk_features(model_dir, X:np.ndarray, batch:int=64) -> np.ndarray:
    "(N, P*d) patch features of the trained model's trunk for uint8 images X (N, H, W), preprocessed as in training."
    import torch
    from medklip.eval.infer import load_model
    from medklip.model import input_stats, preprocess
    model, meta = load_model(model_dir)
    out = []
    with torch.inference_mode():
        for i in range(0, len(X), batch):
            x = preprocess(torch.from_numpy(np.ascontiguousarray(X[i:i + batch])), int(meta['image_size']), *input_stats(meta))
            mem, _ = model.patches(x)
            out.append(mem.float().reshape(len(x), -1).numpy())
    return np.concatenate(out)


def pixel_features(X:np.ndarray, side:int=32) -> np.ndarray:
    "(N, side*side) raw pixels, bilinearly downsampled: the trunk-free reference."
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(np.asarray(im)).resize((side, side), Image.BILINEAR), np.float32).ravel() for im in X])


def world_visibility(world_dir, model_dir, split:str='validate', min_pos:int=10, folds:int=5, C:float=.01) -> list[dict]:
    "One row per finding with at least `min_pos` positives in `split`: probe AUROC on the trunk and on the pixels."
    import pandas as pd
    from medklip.data.demo import read_manifest
    W = Path(world_dir)
    man = read_manifest(W/'demo') or {}
    seen, unseen = man.get('seen_findings', []), man.get('unseen_findings', [])
    idx = pd.read_csv(W/'store'/'index.csv'); idx = idx[idx.split == split]
    lab = pd.read_csv(W/'demo'/'demo'/'labels.csv').set_index('dicom_id').loc[idx.image_id]
    X = np.asarray(np.load(W/'store'/'images.npy', mmap_mode='r')[idx.row.to_numpy()])
    feats = dict(trunk=trunk_features(model_dir, X), pixels=pixel_features(X))
    rows = []
    for f in seen + unseen:
        y = lab[f].to_numpy() == 1
        if y.sum() < min_pos or (~y).sum() < min_pos: continue
        rows.append(dict(finding=f, unseen=f in unseen, n=int(y.sum()), **{k: probe_auroc(F, y, folds, C) for k, F in feats.items()}))
    return rows


def verdicts(rows:list[dict], q:float=.1) -> tuple[float, list[dict]]:
    "The seen findings' `q` quantile of the trunk probe, and each unseen row with `visible` = its trunk probe reaches it."
    bar = float(np.quantile([r['trunk'] for r in rows if not r['unseen']], q))
    return bar, [dict(r, visible=r['trunk'] >= bar) for r in rows if r['unseen']]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work', required=True, help="an ablations work folder holding world_SEED/ (demo, store, ARM_sSEED/model)")
    p.add_argument('--world-seeds', nargs='+', type=int, default=[0, 1], dest='world_seeds')
    p.add_argument('--arm', default='plain'); p.add_argument('--seed', type=int, default=0)
    p.add_argument('--split', default='validate', choices=['validate', 'test'], help="validate: the rule is applied there; test only to report")
    p.add_argument('--quantile', type=float, default=.1, help="the seen findings' quantile each unseen finding must reach")
    a = p.parse_args()
    import torch; torch.set_num_threads(1)
    out = {}
    for w in a.world_seeds:
        W = Path(a.work)/f'world_{w}'
        rows = world_visibility(W, W/f'{a.arm}_s{a.seed}'/'model', a.split)
        bar, un = verdicts(rows, a.quantile)
        seen = np.array([r['trunk'] for r in rows if not r['unseen']])
        print(f"\nworld {w}, {a.split}, {a.arm} seed {a.seed}: seen findings' trunk probe min {seen.min():.3f}, "
              f"{a.quantile:.0%} quantile {bar:.3f}, median {np.median(seen):.3f} ({len(seen)} findings)")
        print('| unseen finding | positives | probe on the trunk | probe on the pixels (32 x 32) | visible |\n|---|---|---|---|---|')
        for r in un: print(f"| {r['finding']} | {r['n']} | {r['trunk']:.3f} | {r['pixels']:.3f} | {'yes' if r['visible'] else 'NO'} |")
        out[f'world{w}'] = dict(bar=bar, rows=rows)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
