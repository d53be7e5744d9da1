"""Zero-shot inference speed: images/s and peak memory for a tiny and a real-size (ResNet-50, random weights) MedKLIP.

Usage: python bench/infer.py [--device cpu|cuda] [--seconds 5] [--batch-size 16]
"""
import argparse, resource, time
import numpy as np, torch
from medklip.eval.infer import Query, query_set, score_images
from medklip.model import MedKLIP, MedKLIPConfig

CONFIGS = {
    'tiny': dict(backbone='tiny', image_size=128, d_model=64, layers=2, heads=4, ffn=128, text_dim=384),
    'resnet50': dict(backbone='resnet50', image_size=224, d_model=256, layers=4, heads=4, ffn=1024, text_dim=768),
}

def bench(name, device, seconds, batch_size, n_extra=0):
    cfg = MedKLIPConfig(**CONFIGS[name]); model = MedKLIP(cfg).to(device).eval()
    meta = dict(image_size=cfg.image_size, mean=0.5, std=0.25, entity_emb=torch.randn(75, cfg.text_dim).numpy())
    extra = [Query(f'q{k}', '', 'text', f'q{k}') for k in range(n_extra)]     # free-text queries, appended one at a time
    q = query_set(extra, meta, embed=lambda t: torch.randn(len(t), cfg.text_dim))
    imgs = np.random.default_rng(0).integers(0, 256, (batch_size, cfg.image_size, cfg.image_size), dtype=np.uint8)
    score_images(model, imgs, q, meta, device)                           # warm-up
    if device == 'cuda': torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        score_images(model, imgs, q, meta, device); n += batch_size
    if device == 'cuda': torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    mem = (f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device == 'cuda'
           else f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process)")
    print(f"{name:9s} {device}: {n / dt:8.1f} images/s  (batch {batch_size}, 75 entity + {n_extra} extra queries, {cfg.image_size}px, {torch.get_num_threads()} threads)  {mem}")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu'); p.add_argument('--seconds', type=float, default=5)
    p.add_argument('--batch-size', type=int, default=16); p.add_argument('--configs', default='tiny,resnet50')
    p.add_argument('--extra', type=int, default=0, help="free-text queries appended (each runs as its own 76-query set)")
    a = p.parse_args()
    if a.device == 'cuda' and not torch.cuda.is_available(): raise SystemExit("--device cuda: no GPU visible to torch")
    for c in a.configs.split(','): bench(c, a.device, a.seconds, a.batch_size, a.extra)
