"""Prepare throughput on MIMIC-size JPEGs: full decode + resize vs reduced-scale decode (Image.draft) + resize, per core.

Run: .venv/bin/python bench/prepare.py [--n 24] [--size 256] [--workers 2]
Writes N synthetic 2544×3056 grey JPEGs (MIMIC-CXR-JPG's typical size and quality 95) to a temp dir, then times
one process decoding + resizing them to S×S both ways (img/s per core), prints the ratio (target >= 3x) and the
mean/max difference between the two paths in grey levels, then runs `prepare_store` end to end with W workers.
"""
from __future__ import annotations
import argparse, os, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medklip.data.io import read_image
from medklip.data.store import prepare_store, resize_uint8


def write_jpegs(root:Path, n:int, h:int=3056, w:int=2544) -> list[Path]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    base = 110 + 70 * np.sin(xx / 260.) * np.cos(yy / 210.) + 20 * np.sin(xx / 23. + yy / 31.)
    paths = []
    for k in range(n):
        img = np.clip(base + rng.normal(0, 4, (h, w)) + 3 * k, 0, 255).astype(np.uint8)
        p = root/'images'/f"CHNCXR_{k:04d}_{k % 2}.jpg"; p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p, quality=95); paths.append(p)
    return paths


def rate(fn, items) -> float:
    t = time.perf_counter()
    for x in items: fn(x)
    return len(items) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=24); ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--workers', type=int, default=0, help='prepare_store workers (0: all cores)')
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d); paths = write_jpegs(root, a.n)
        full = rate(lambda p: resize_uint8(read_image(p)[0], a.size), paths)
        draft = rate(lambda p: resize_uint8(read_image(p, min_size=a.size)[0], a.size), paths)
        diffs = [np.abs(resize_uint8(read_image(p)[0], a.size).astype(float) - resize_uint8(read_image(p, min_size=a.size)[0], a.size))
                 for p in paths[:4]]
        print(f"{a.n} JPEGs 2544x3056 grey -> {a.size}px, one core: full decode+resize {full:.1f} img/s | "
              f"draft decode+resize {draft:.1f} img/s | ratio {draft / full:.2f}x (target >= 3x) | "
              f"difference mean {np.mean([x.mean() for x in diffs]):.3f} max {max(x.max() for x in diffs):.0f} grey levels")
        pd.DataFrame(dict(image_id=[p.stem for p in paths], patient_id=[p.stem for p in paths],
                          image_path=[f"images/{p.name}" for p in paths], view='PA', tuberculosis=0)).to_csv(root/'labels.csv', index=False)
        w = a.workers or os.cpu_count()
        t = time.perf_counter(); prepare_store('tb', root, root/'store', size=a.size, workers=a.workers, progress=False)
        dt = time.perf_counter() - t
        print(f"prepare_store (draft, {w} workers, incl. pool start-up and stats): {a.n / dt:.1f} img/s = {a.n / dt / w:.1f} img/s per worker; "
              f"MIMIC-CXR-JPG's 377,110 images at the draft rate per core on 16 cores: {377110 / (draft * 16) / 60:.1f} min")


if __name__ == '__main__':
    main()
