"""Images/s decoding from source files vs reading the prepared uint8 store, on the same images.

Run: .venv/bin/python bench/io.py [--n 200] [--size 256]
Synthetic: N 1024x1024 grey JPEGs written to a temp dir. Real: up to N PNGs of the TB set in ../shared/data if present.
"Source" = read_image + resize to S (what a loader without a store does per sample); "store" = one row of the
memory-mapped images.npy converted to float32 [0,1] (what training does). Target: store >= 20x faster.
"""
from __future__ import annotations
import argparse, os, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medklip.data.io import read_image
from medklip.data.store import ImageStore, prepare_store, resize_uint8


def _rate(fn, items) -> float:
    t = time.perf_counter()
    for x in items: fn(x)
    return len(items) / (time.perf_counter() - t)


def bench(name:str, dataset:str, root:Path, paths:list[str], size:int, tmp:Path) -> float:
    src = _rate(lambda p: resize_uint8(read_image(p)[0], size), paths)
    dec = _rate(read_image, paths)
    t = time.perf_counter()
    prepare_store(dataset, root, tmp/f"store_{name}", size=size, progress=False)
    prep = time.perf_counter() - t
    st = ImageStore(tmp/f"store_{name}")
    rows = st.index.index[st.index['image_path'].isin(paths)].to_numpy()
    np.random.default_rng(0).shuffle(rows)   # random access, as a shuffled epoch
    sto = _rate(lambda i: np.asarray(st.images[i], dtype=np.float32) / 255., rows)
    print(f"{name}: {len(paths)} images | decode {dec:,.0f} img/s | decode+resize {src:,.0f} img/s | store {sto:,.0f} img/s "
          f"| ratio store/decode+resize {sto/src:,.0f}x | prepare {prep:.1f}s")
    return sto / src


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=200); ap.add_argument('--size', type=int, default=256)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d); root = tmp/'synth'; (root/'images').mkdir(parents=True)
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:1024, :1024]
        base = (128 + 60*np.sin(xx/90.) * np.cos(yy/70.)).astype(np.float32)
        ids = [f"CHNCXR_{k:04d}_{k % 2}" for k in range(a.n)]
        for i in ids:
            im = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(im).save(root/f"images/{i}.jpg", quality=90)
        pd.DataFrame(dict(image_id=ids, patient_id=ids, image_path=[f"images/{i}.jpg" for i in ids], view='PA',
                          tuberculosis=[k % 2 for k in range(a.n)])).to_csv(root/'labels.csv', index=False)
        ratios = [bench('synthetic 1024px JPEG', 'tb', root, [str(root/f"images/{i}.jpg") for i in ids], a.size, tmp)]
        shared = Path(os.environ.get('MEDKLIP_SHARED', Path(__file__).resolve().parents[2]/'shared'))/'data/tb_montgomery_shenzhen'
        if (shared/'labels.csv').exists():
            lab = pd.read_csv(shared/'labels.csv')
            paths = [str((shared/p).absolute()) for p in lab['image_path'][:a.n]]
            ratios.append(bench('real TB 512px PNG', 'tb', shared, paths, a.size, tmp))
        print(f"min ratio {min(ratios):,.0f}x (target >= 20x): {'OK' if min(ratios) >= 20 else 'BELOW TARGET'}")


if __name__ == '__main__': main()
