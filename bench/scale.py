"""Start-up and memory at MIMIC-CXR size on CPU, and parse-reports throughput per core.

Run: .venv/bin/python bench/scale.py [--images 377110] [--studies 227835] [--threads 2] [--reports-n 20000]
Simulates a store index of 377,110 images (8×8 pixels: only the index, labels and memory map matter here) and
227,835 studies of triplets (5–12 per study), then times, in one process limited to `--threads` torch threads:
`read_triplets`, the label matrices and split (`SplitData` for train and validate), and `pretrain` up to its first
optimiser step (a tiny model, `max_steps=1`; pretrain reads the triplets and builds the splits itself again).
Peak resident memory (ru_maxrss) is printed after each phase. Target: first training step <= 60 s on 2 cores.
Then parses `--reports-n` replicated reports (IU X-ray's real reports from ../shared when present, else demo
phrasing) on one core with `parse_corpus` and extrapolates 227,835 reports on 8 cores (target <= 30 s), and
times training's `augment()` on CPU with and without RandAugment (images/s). `--only startup|parse|augment`.
"""
from __future__ import annotations
import argparse, json, resource, sys, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd

from medklip.core import save_json
from medklip.vocab import ENTITIES, POSITIONS

HERE = Path(__file__).resolve().parents[1]


def peak_mb() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_corpus(root:Path, n_img:int, n_study:int, seed:int=0):
    "A store (index, labels, 8×8 images, meta) and a triplets JSONL of MIMIC-CXR's size."
    rng = np.random.default_rng(seed)
    st = root/'store'; st.mkdir(parents=True)
    study = np.concatenate([np.arange(n_study), rng.choice(n_study, n_img - n_study, replace=n_img - n_study > n_study)])
    study.sort()
    u = rng.random(n_img)
    split = np.where(u < 0.0079, 'validate', np.where(u < 0.0216, 'test', 'train'))   # MIMIC-CXR's 2,991 / 5,159 of 377,110
    sid = np.char.add('5', np.char.zfill(study.astype(str), 7))
    pd.DataFrame(dict(row=np.arange(n_img), image_id=[f"d{k:08d}" for k in range(n_img)], study_id=sid,
                      patient_id=np.char.add('1', np.char.zfill((study // 3).astype(str), 7)), split=split, view='PA',
                      image_path=[f"files/x/d{k:08d}.jpg" for k in range(n_img)], orig_h=3056, orig_w=2544)).to_csv(st/'index.csv', index=False)
    np.save(st/'images.npy', rng.integers(0, 256, (n_img, 8, 8), dtype=np.uint8))
    np.save(st/'labels.npy', np.zeros((n_img, 0), np.float32))
    save_json(dict(dataset='synthetic', root=str(root), size=8, pathologies=[], mean=0.5, std=0.29, n=n_img, skipped=[]), st/'meta.json')
    with open(root/'triplets.jsonl', 'w') as f:
        for s in np.unique(sid):
            k = rng.integers(5, 13)
            trip = [dict(entity=ENTITIES[e], position=POSITIONS[p], exist=int(x)) for e, p, x in
                    zip(rng.integers(0, len(ENTITIES), k), rng.integers(0, len(POSITIONS), k), rng.random(k) < 0.4)]
            f.write(json.dumps(dict(study_id=str(s), triplets=trip)) + '\n')


def startup(a):
    import torch
    from medklip.train import SplitData, make_synthetic_corpus, pretrain, read_triplets
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t = time.perf_counter(); write_corpus(root, a.images, a.studies)
        kn = make_synthetic_corpus(root/'k', n=4, size=16, text_dim=16)/'knowledge'
        print(f"corpus: {a.images:,} images, {a.studies:,} studies written in {time.perf_counter() - t:.1f}s "
              f"(triplets {(root/'triplets.jsonl').stat().st_size / 1e6:.0f} MB) | peak {peak_mb():,.0f} MB")
        t0 = time.perf_counter(); labels = read_triplets(root/'triplets.jsonl'); t1 = time.perf_counter()
        print(f"read_triplets: {len(labels):,} studies in {t1 - t0:.1f}s | peak {peak_mb():,.0f} MB")
        tr = SplitData(root/'store', labels, 'train'); va = SplitData(tr.store, labels, 'validate'); t2 = time.perf_counter()
        print(f"SplitData train {len(tr):,} images / {len(tr.matrices):,} matrices ({tr.matrices.nbytes / 1e6:,.0f} MB), validate {len(va):,}: "
              f"{t2 - t1:.1f}s | peak {peak_mb():,.0f} MB")
        del labels, tr, va
        first = []
        s = dict(backbone='tiny', image_size=16, stride=8, d_model=16, layers=1, heads=2, ffn=32, batch_size=8, epochs=1,
                 max_steps=1, workers=0, device='cpu', amp=False, warmup_steps=1, val_every=1, threads=a.threads)
        t3 = time.perf_counter()
        pretrain(root/'store', root/'triplets.jsonl', kn, root/'out', s, callbacks=[lambda info: first.append(time.perf_counter())],
                 log=lambda *m: None)
        t4 = time.perf_counter()
        print(f"pretrain: first optimiser step after {first[0] - t3:.1f}s (whole call incl. save {t4 - t3:.1f}s) | peak {peak_mb():,.0f} MB "
              f"| target <= 60 s on {a.threads} cores")


def reports(a) -> list:
    from medklip.text.parse import iter_reports
    src = Path(a.reports)
    if src.exists():
        base = [sec for _, _, sec in iter_reports(src)]; name = f"IU X-ray reports ({len(base):,}, {src})"
    else:
        from medklip.data.demo import write_report
        rng = np.random.default_rng(0)
        base = [{'report': write_report(rng, [])[0]} for _ in range(500)]; name = "demo reports (500)"
    return [(i, f"s{i}", base[i % len(base)]) for i in range(a.reports_n)], name


def parse(a):
    from medklip.text.parse import parse_corpus
    items, name = reports(a)
    t = time.perf_counter(); n = sum(1 for _ in parse_corpus(iter(items), workers=1, progress=False)); dt = time.perf_counter() - t
    rate = n / dt
    print(f"parse-reports: {n:,} replicated {name} on 1 core: {rate:,.0f} reports/s per core | 227,835 reports on 8 cores: "
          f"{227835 / (8 * rate):.1f}s at this rate (target <= 30 s, i.e. >= 950 reports/s per core)")


def augment_cost(a):
    "images/s of training's augment() on CPU (batch 48, 256-px uint8 -> 224), without and with RandAugment(2, 7)."
    import torch
    from medklip.train import augment
    torch.set_num_threads(a.threads)
    x = torch.randint(0, 256, (48, 256, 256), dtype=torch.uint8); m = torch.full((48, 51, 75), -1, dtype=torch.int8)
    for ops in (0, 2):
        g = torch.Generator().manual_seed(0); augment(x, m, 224, 0.5, 0.25, generator=g, randaugment_ops=ops)   # warm-up
        t = time.perf_counter()
        for _ in range(a.aug_batches): augment(x, m, 224, 0.5, 0.25, generator=g, randaugment_ops=ops)
        r = 48 * a.aug_batches / (time.perf_counter() - t)
        print(f"augment on CPU ({a.threads} threads), crop+flip+jitter{' + RandAugment(2, 7)' if ops else ''}: {r:,.0f} images/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--images', type=int, default=377110); ap.add_argument('--studies', type=int, default=227835)
    ap.add_argument('--threads', type=int, default=2); ap.add_argument('--reports-n', type=int, default=20000)
    ap.add_argument('--reports', default=str(HERE.parent/'shared'/'data'/'iu_xray'/'reports.csv'), help='report CSV to replicate (findings, impression)')
    ap.add_argument('--aug-batches', type=int, default=10)
    ap.add_argument('--only', choices=['startup', 'parse', 'augment'], default=None, help='run one part only')
    a = ap.parse_args()
    for name, fn in (('startup', startup), ('parse', parse), ('augment', augment_cost)):
        if a.only in (None, name): fn(a)


if __name__ == '__main__':
    main()
