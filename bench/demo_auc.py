"""Held-out existence AUC of a trained demo model, per finding and mean over the seen findings.

    .venv/bin/python bench/demo_auc.py --model work/model --store work/store --demo data/demo [--split test]

Scores every image of the split of the store (`medklip.train.load_checkpoint` + `medklip.model.preprocess`, the
same preprocessing as evaluation) with the entity queries of the checkpoint, and compares the existence score
(softmax[..., 1]) with the ground-truth image labels of the generator, DEMO/demo/labels.csv. The never-reported
(unseen) finding of DEMO/demo/manifest.json is reported separately (it has no entity query) and left out of the mean.
"""
from __future__ import annotations
import argparse, json, os, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from medklip.data.store import ImageStore
from medklip.model import preprocess
from medklip.train import load_checkpoint
from medklip.vocab import ENTITY_INDEX


@torch.no_grad()
def demo_auc(model_dir, store, demo, split:str='test', batch_size:int=64) -> dict:
    "Per-finding and mean existence AUC on `split` of the demo store against DEMO/demo/labels.csv."
    model, meta = load_checkpoint(model_dir)
    st = ImageStore(store)
    rows = st.split_indices(split)
    manifest = json.loads((Path(demo)/'demo'/'manifest.json').read_text())
    gt = pd.read_csv(Path(demo)/'demo'/'labels.csv', dtype={'dicom_id': str, 'study_id': str}).set_index('dicom_id')
    ids = st.index['image_id'].astype(str).to_numpy()[rows]
    missing = [i for i in ids if i not in gt.index]
    if missing: raise SystemExit(f"{len(missing)} store images have no row in {demo}/demo/labels.csv (e.g. {missing[0]}); same demo corpus?")
    gt = gt.loc[ids]
    scores = []
    for i in range(0, len(rows), batch_size):
        x = preprocess(torch.from_numpy(st.images[rows[i:i + batch_size]]), meta['image_size'], meta['mean'], meta['std'])
        scores.append(model(x, meta['entity_emb'])['logits'].float().softmax(-1)[..., 1])
    s = torch.cat(scores).numpy()
    per = {}
    for f in manifest['seen_findings']:
        y = gt[f].to_numpy()
        per[f] = round(float(roc_auc_score(y, s[:, ENTITY_INDEX[f]])), 4)
    return dict(split=split, n=len(rows), per_finding=per, mean_auc=round(float(np.mean(list(per.values()))), 4),
                unseen=manifest['unseen_findings'])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True, help='pretrain output folder (or a .ckpt / model.safetensors)')
    p.add_argument('--store', required=True, help='image store of the demo corpus (medklip prepare)')
    p.add_argument('--demo', required=True, help='demo corpus folder (medklip demo-data --out)')
    p.add_argument('--split', default='test')
    a = p.parse_args()
    t = time.time()
    r = demo_auc(a.model, a.store, a.demo, a.split)
    r['seconds'] = round(time.time() - t, 1)
    print(json.dumps(r))


if __name__ == '__main__':
    main()
