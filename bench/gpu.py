"""One-shot GPU benchmark of the paper configuration: training images/s (data loading included) and zeroshot inference images/s.

Run on a machine with one CUDA GPU: .venv/bin/python bench/gpu.py [--images 8192] [--workers 8] [--budget 270]
Without a CUDA GPU it says so and exits 0 (nothing is measured). `--device cpu --tiny` runs every phase on a tiny
configuration on the CPU through the GPU code paths (bf16 autocast, channels_last; `--compile-cpu` adds torch.compile
with the aot_eager backend), to check the script and those paths (its numbers mean nothing).

Paper configuration: ResNet-50 cut after stage 3, 224 px, 4-layer decoder (d 256, 4 heads, FFN 1024), 75 queries
of 768-d, batch 48, bf16 autocast + channels_last, AdamW, RandAugment(2, 7) + crop + flip + jitter on the device.
Images come from a 256-px uint8 store (memory-mapped, random content) through training's own loader (`_Batches`,
DataLoader workers, pinned memory), so data loading is included. Per phase it prints images/s, peak GPU memory
(max_memory_allocated) and the share of step time spent waiting for the next batch. Phases: eager at batch 48;
zeroshot inference (75 entity queries + 1 free-text extra, bf16, batch 256); the largest batch that fits
(doubling from 96 until out of memory); torch.compile at batch 48 (and at the largest, if the time budget allows).
Target (issue 12): >= 1,500 training images/s on one H100/H200 (stretch 3,000).
"""
from __future__ import annotations
import argparse, json, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch


def make_store(root:Path, n:int, size:int, text_dim:int, seed:int=0) -> tuple[Path, Path, Path]:
    "A uint8 store of n random size×size images, triplets for each (one study per image) and random knowledge embeddings."
    import pandas as pd
    from medklip.core import save_json
    from medklip.train import make_synthetic_corpus
    from medklip.vocab import ENTITIES, POSITIONS
    rng = np.random.default_rng(seed)
    st = root/'store'; st.mkdir(parents=True)
    arr = np.lib.format.open_memmap(st/'images.npy', mode='w+', dtype=np.uint8, shape=(n, size, size))
    for i in range(0, n, 512): arr[i:i + 512] = rng.integers(0, 256, (min(512, n - i), size, size), dtype=np.uint8)
    arr.flush(); del arr
    pd.DataFrame(dict(row=np.arange(n), image_id=[f"i{k}" for k in range(n)], study_id=[f"s{k}" for k in range(n)],
                      patient_id=[f"p{k}" for k in range(n)], split='train', view='PA', image_path='-', orig_h=size, orig_w=size)).to_csv(st/'index.csv', index=False)
    np.save(st/'labels.npy', np.zeros((n, 0), np.float32))
    save_json(dict(dataset='synthetic', root=str(root), size=size, pathologies=[], mean=0.5, std=0.29, n=n, skipped=[]), st/'meta.json')
    with open(root/'triplets.jsonl', 'w') as f:
        for k in range(n):
            e, p, x = rng.integers(0, len(ENTITIES), 8), rng.integers(0, len(POSITIONS), 8), rng.random(8) < 0.4
            f.write(json.dumps(dict(study_id=f"s{k}", triplets=[dict(entity=ENTITIES[a], position=POSITIONS[b], exist=int(c)) for a, b, c in zip(e, p, x)])) + '\n')
    kn = make_synthetic_corpus(root/'k', n=4, size=16, text_dim=text_dim)/'knowledge'
    return st, root/'triplets.jsonl', kn


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def train_phase(name, data, kn, cfg, s, dev, batch, steps, warmup, compile_:bool, log, gpu:bool=True, backend='inductor') -> dict|None:
    "Timed training steps as `pretrain` runs them (`gpu`: bf16 autocast + channels_last); None when the batch does not fit in GPU memory."
    from medklip.losses import medklip_loss
    from medklip.model import MedKLIP
    from medklip.train import _Batches, _loader, augment, epoch_order, param_groups
    torch.manual_seed(0)
    model = MedKLIP(cfg).to(dev)
    if gpu: model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(param_groups(model, s['weight_decay']), lr=s['lr'], fused=dev.type == 'cuda')
    net = torch.compile(model, backend=backend) if compile_ else model
    emb, pemb = kn['entity_emb'].to(dev), kn['position_emb'].to(dev)
    n_steps = min(warmup + steps, len(data) // batch)
    src = _Batches(data, epoch_order(len(data), 0, 0), batch, 1, 0, 0, n_steps)
    if dev.type == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)
    wait = busy = 0.; done = 0; t_start = None
    try:
        it = iter(_loader(src, s, dev))
        for k in range(n_steps):
            t0 = time.perf_counter()
            step, which, x, m = next(it)
            t1 = time.perf_counter()
            g = torch.Generator(device=dev).manual_seed(k)
            x, m = augment(x.to(dev, non_blocking=True), m.to(dev, non_blocking=True), cfg.image_size, 0.5, 0.29, s['crop_scale'], True,
                           s['jitter'], g, randaugment_ops=s['randaugment_ops'], randaugment_magnitude=s['randaugment_magnitude'])
            if gpu: x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
                o = net(x, emb)
            loss, _ = medklip_loss(o, m, pemb, 7, 1.0, g)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            if (k + 1) % s['log_every'] == 0: loss.item()   # pretrain reads the loss back only at log points, as here
            t2 = time.perf_counter()
            if k == warmup - 1: sync(dev); t_start = time.perf_counter()
            elif k >= warmup: wait += t1 - t0; busy += t2 - t1; done += 1
        sync(dev)
    except torch.cuda.OutOfMemoryError:
        del model, opt, net
        torch.cuda.empty_cache(); log(f"{name}: batch {batch} does not fit in GPU memory"); return None
    total = time.perf_counter() - t_start if t_start else float('nan')
    r = dict(phase=name, batch=batch, compile=compile_, steps=done, images_per_s=round(done * batch / total, 1) if done else None,
             data_wait_share=round(wait / max(wait + busy, 1e-9), 3),
             peak_gpu_mem_gib=round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == 'cuda' else None)
    log(json.dumps(r))
    del model, opt, net
    if dev.type == 'cuda': torch.cuda.empty_cache()
    return r


def zeroshot_phase(data, kn, cfg, dev, batch, batches, log) -> dict:
    "Inference images/s of `medklip.eval.infer.run_query_set` (75 entities + 1 extra query) on store images."
    from medklip.eval.infer import Query, query_set, run_query_set
    from medklip.model import MedKLIP, preprocess
    model = MedKLIP(cfg).to(dev).eval()
    model = model.to(memory_format=torch.channels_last)
    meta = dict(entity_emb=kn['entity_emb'].numpy())
    qs = query_set([Query('x', '', 'text', 'x')], meta, embed=lambda t: torch.randn(len(t), kn['entity_emb'].shape[1]))
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)
    n = min(batches + 2, len(data.images) // batch); t_start = None
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
        for k in range(n):
            if k == 2: sync(dev); t_start = time.perf_counter()
            u8 = torch.from_numpy(np.array(data.images[k * batch:(k + 1) * batch]))
            if dev.type == 'cuda': u8 = u8.pin_memory()
            x = preprocess(u8.to(dev, non_blocking=True), cfg.image_size, 0.5, 0.29)
            x = x.contiguous(memory_format=torch.channels_last)
            s, a = run_query_set(model, x, qs)
            s.float().cpu()
        sync(dev)
    dt = time.perf_counter() - t_start if t_start else float('nan')
    r = dict(phase='zeroshot inference', batch=batch, queries=76, images_per_s=round((n - 2) * batch / dt, 1) if n > 2 else None,
             peak_gpu_mem_gib=round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == 'cuda' else None)
    log(json.dumps(r))
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda'); ap.add_argument('--tiny', action='store_true', help='tiny model and store (script check)')
    ap.add_argument('--images', type=int, default=8192); ap.add_argument('--workers', type=int, default=8)
    ap.add_argument('--steps', type=int, default=30); ap.add_argument('--budget', type=float, default=270, help='seconds; later phases are skipped past it')
    ap.add_argument('--no-compile', action='store_true')
    ap.add_argument('--compile-cpu', action='store_true', help='with --device cpu --tiny: also a compiled phase (aot_eager backend)')
    a = ap.parse_args(argv)
    log = lambda m: print(m, flush=True)
    dev = torch.device(a.device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        log("bench/gpu.py: no CUDA GPU is visible to torch here; nothing measured (run it on a machine with a GPU)")
        return 0
    from medklip.model import MedKLIPConfig
    from medklip.train import DEFAULTS, SplitData, load_knowledge, read_triplets
    T0 = time.perf_counter()
    if dev.type == 'cuda':
        torch.backends.cudnn.benchmark = True; torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
        log(f"device: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    tiny = a.tiny
    cfg = MedKLIPConfig(backbone='tiny', image_size=32, d_model=16, layers=1, heads=2, ffn=32, text_dim=16) if tiny else MedKLIPConfig()
    n, size = (64, 40) if tiny else (a.images, 256)
    s = dict(DEFAULTS, workers=a.workers if dev.type == 'cuda' else 0)
    with tempfile.TemporaryDirectory() as d:
        st, trip, knp = make_store(Path(d), n, size, cfg.text_dim)
        data = SplitData(st, read_triplets(trip), 'train'); kn = load_knowledge(knp)
        log(f"store: {n} images {size}x{size} uint8 ({n * size * size / 2**20:.0f} MiB), setup {time.perf_counter() - T0:.1f}s; "
            f"config {cfg.backbone}, {cfg.image_size}px, {cfg.layers} decoder layers, 75 queries")
        steps, warm = (2, 1) if tiny else (a.steps, 5)
        over = lambda: time.perf_counter() - T0 > a.budget
        res = [train_phase('train eager', data, kn, cfg, s, dev, 8 if tiny else 48, steps, warm, False, log)]
        if dev.type == 'cpu' and tiny and a.compile_cpu:   # dynamo + AOT autograd, no code generation (~15 s more here)
            res.append(train_phase('train compiled (aot_eager)', data, kn, cfg, s, dev, 8, steps, warm, True, log, backend='aot_eager'))
        zs = zeroshot_phase(data, kn, cfg, dev, 16 if tiny else 256, 2 if tiny else 20, log)
        best = 48
        if dev.type == 'cuda' and not tiny:
            for b in (96, 192, 384, 768):
                if over() or b > n: break
                r = train_phase('train eager (largest batch search)', data, kn, cfg, s, dev, b, 8, 3, False, log)
                if r is None: break
                best = b; res.append(r)
        can_compile = not a.no_compile and dev.type == 'cuda'
        if can_compile and not over(): res.append(train_phase('train compiled', data, kn, cfg, s, dev, 48, steps, 5, True, log))
        if can_compile and best > 48 and not over(): res.append(train_phase('train compiled, largest batch', data, kn, cfg, s, dev, best, 10, 4, True, log))
        if not can_compile: log("torch.compile (inductor) phases skipped (" + ("--no-compile" if a.no_compile else "not on CPU") + ")")
    ok = [r for r in res if r and r.get('images_per_s')]
    log(f"summary: best training {max((r['images_per_s'] for r in ok), default=float('nan')):,.0f} images/s, zeroshot "
        f"{zs['images_per_s'] if zs else float('nan'):,.0f} images/s, total {time.perf_counter() - T0:.0f}s"
        + (" (tiny CPU check: numbers mean nothing)" if tiny else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
