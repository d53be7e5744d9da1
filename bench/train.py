"""Training throughput: images/s and peak memory of MedKLIP pretraining steps, data loading and augmentation included.

CPU, demo config (default):   .venv/bin/python bench/train.py [--threads 1] [--store S --triplets T.jsonl]
GPU, paper config:            python bench/train.py --device cuda --config real --batch-size 128
Reads an image store (--store) when given, else a synthetic one written to a temporary folder. Prints images/s,
ms per step for each phase (data, augment, forward, loss, backward, optimizer), threads, load average, peak memory.
"""
from __future__ import annotations
import argparse, json, os, resource, tempfile, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np
import torch

import medklip.train as T
from medklip.model import MedKLIP, MedKLIPConfig

CONFIGS = {
    'demo': dict(backbone='tiny', image_size=128, d_model=128, layers=2, heads=4, ffn=256, text_dim=384, store_size=128),
    'real': dict(backbone='resnet50', image_size=224, d_model=256, layers=4, heads=4, ffn=1024, text_dim=768, store_size=256),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', choices=sorted(CONFIGS), default='demo')
    p.add_argument('--device', default='cpu')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--steps', type=int, default=10, help='timed steps (after 2 warm-up steps)')
    p.add_argument('--workers', type=int, default=1)
    p.add_argument('--store', default=None, help='image store folder (default: a synthetic one)')
    p.add_argument('--triplets', default=None, help='triplets JSONL of the store')
    p.add_argument('--amp', action=argparse.BooleanOptionalAction, default=True, help='bf16 autocast on GPU')
    p.add_argument('--compile', action='store_true')
    p.add_argument('--threads', type=int, default=0, help='torch intra-op threads (0: torch default)')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    c = dict(CONFIGS[a.config]); text_dim, size = c.pop('text_dim'), c.pop('store_size')
    dev = torch.device(a.device)
    torch.manual_seed(0)
    n = a.batch_size * (a.steps + 2)
    if a.store is None:
        root = T.make_synthetic_corpus(tempfile.mkdtemp(), n=int(n / 0.75) + 4, size=size, text_dim=text_dim)
        store, trip = root/'store', root/'triplets.jsonl'
    else: store, trip = Path(a.store), Path(a.triplets)
    data = T.SplitData(store, T.read_triplets(trip), 'train')
    mean, std = float(data.meta['mean']), float(data.meta['std'])
    model = MedKLIP(MedKLIPConfig(**c, text_dim=text_dim)).to(dev)
    if dev.type == 'cuda': model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if a.compile else model
    opt = torch.optim.AdamW(T.param_groups(model, 0.02), lr=1e-4)
    emb, pemb = torch.randn(75, text_dim, device=dev), torch.randn(51, text_dim, device=dev)
    steps = min(a.steps + 2, len(data) // a.batch_size)
    src = T._Batches(data, T.epoch_order(len(data), 0, 0), a.batch_size, 1, 0, 0, steps)
    loader = T._loader(src, dict(workers=a.workers, seed=0), dev)   # as pretrain: in-process on CPU, DataLoader workers on GPU
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats()
    use_amp = a.amp and dev.type == 'cuda'
    t0, timed, phases = None, 0, dict(data=0.0, augment=0.0, forward=0.0, loss=0.0, backward=0.0, optimizer=0.0)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == 'cuda' else (lambda: None)
    tl = time.perf_counter()
    def tick(k):  # add the time since the last tick to phase k
        nonlocal tl
        sync(); t = time.perf_counter(); phases[k] += t - tl; tl = t
    for step, _, x, m in loader:
        if step == 2:
            sync(); t0 = time.perf_counter(); phases = dict.fromkeys(phases, 0.0); tl = t0
        tick('data')
        g = torch.Generator(device=dev).manual_seed(step)
        x, m = T.augment(x.to(dev, non_blocking=True), m.to(dev, non_blocking=True), c['image_size'], mean, std, generator=g)
        if dev.type == 'cuda': x = x.contiguous(memory_format=torch.channels_last)
        tick('augment')
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            o = net(x, emb)
        tick('forward')
        loss, _ = T.medklip_loss(o, m, pemb, generator=g)
        tick('loss')
        opt.zero_grad(set_to_none=True); loss.backward()
        tick('backward')
        opt.step()
        tick('optimizer')
        if step >= 2: timed += x.shape[0]
    if dev.type == 'cuda': torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    res = dict(config=a.config, device=str(dev), batch_size=a.batch_size, timed_steps=steps - 2, images_per_s=round(timed / dt, 2),
               threads=torch.get_num_threads(), load_avg=[round(v, 2) for v in os.getloadavg()],
               ms_per_step={k: round(v / max(1, steps - 2) * 1000, 1) for k, v in phases.items()}, peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    if dev.type == 'cuda': res['peak_gpu_mb'] = round(torch.cuda.max_memory_allocated() / 2**20, 1); res['gpu'] = torch.cuda.get_device_name()
    print(json.dumps(res))


if __name__ == '__main__':
    main()
