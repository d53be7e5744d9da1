"""CPU rehearsal of training's GPU code paths (CI has no GPU, and the first GPU run must not be the first time a path runs).

bf16 autocast, channels_last and loader workers run on the CPU with MEDKLIP_GPU_PATHS_ON_CPU=1; torch.compile runs
dynamo + AOT autograd (backend aot_eager: inductor's C++ code generation takes minutes here, opt-in below); DDP with
2 gloo processes is tests/test_ddp.py and `bench/gpu.py --device cpu --tiny` tests/test_gpu_bench.py (same marker)."""
import functools, os, shutil
import pytest
import torch

import medklip.train as T
from medklip.losses import AUX_LOSSES

pytestmark = pytest.mark.gpu_rehearsal
TINY = dict(backbone='tiny', image_size=48, d_model=32, layers=1, heads=2, ffn=64, batch_size=6, epochs=1, lr=1e-3,
            warmup_steps=2, workers=0, val_batch_size=16, dropout=0.0)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    return T.make_synthetic_corpus(tmp_path_factory.mktemp('corpus'), n=24, size=48)


def _run(corpus, out, aux_losses=(), **settings):
    return T.pretrain(corpus/'store', corpus/'triplets.jsonl', corpus/'knowledge', out, {**TINY, **settings}, aux_losses=aux_losses,
                      log=lambda *a: None)


def test_bf16_autocast_channels_last_and_loader_workers(corpus, tmp_path, monkeypatch):
    "With the GPU paths on, the step sees channels_last images and bf16 logits, batches come from DataLoader workers; fp32 off."
    seen, loaders = [], []
    def probe(batch, out, model):
        seen.append((batch['images'].is_contiguous(memory_format=torch.channels_last), out['logits'].dtype))
        return 'probe', out['logits'].float().sum() * 0.0
    monkeypatch.setitem(AUX_LOSSES, 'probe', probe)
    real = T._loader
    monkeypatch.setattr(T, '_loader', lambda *a: loaders.append(real(*a)) or loaders[-1])
    plain = _run(corpus, tmp_path/'cpu', {'probe': 1.0}, workers=2)
    assert seen and all(s == (False, torch.float32) for s in seen) and not isinstance(loaders[-1], torch.utils.data.DataLoader)
    seen.clear()
    monkeypatch.setenv('MEDKLIP_GPU_PATHS_ON_CPU', '1')
    r = _run(corpus, tmp_path/'gpu', {'probe': 1.0}, workers=2)
    assert len(seen) == 3 and all(s == (True, torch.bfloat16) for s in seen)
    assert isinstance(loaders[-1], torch.utils.data.DataLoader) and loaders[-1].num_workers == 2
    assert r['steps'] == plain['steps'] == 3 and 0 <= r['val_auc'] <= 1
    assert r['loss'] != plain['loss'] and abs(r['loss'] - plain['loss']) < 0.05 * abs(plain['loss'])   # bf16 rounding, same run


def _dynamo_ok():
    try: return torch._dynamo.is_dynamo_supported()
    except Exception: return False


@pytest.mark.skipif(not _dynamo_ok(), reason="torch.compile (dynamo) is not supported on this Python/torch")
def test_compiled_step_equals_eager(corpus, tmp_path, monkeypatch):
    "pretrain.compile with the GPU paths: the compiled model (dynamo + AOT autograd) trains exactly as the eager one."
    monkeypatch.setenv('MEDKLIP_GPU_PATHS_ON_CPU', '1')
    calls, real = [], torch.compile
    def compile_(*a, **k):
        calls.append(k); return real(*a, **{**k, 'backend': 'aot_eager'})
    monkeypatch.setattr(torch, 'compile', compile_)
    eager = _run(corpus, tmp_path/'eager', max_steps=2)
    compiled = _run(corpus, tmp_path/'compiled', max_steps=2, compile=True)
    assert len(calls) == 1 and compiled['steps'] == eager['steps'] == 2
    assert compiled['loss'] == pytest.approx(eager['loss'], rel=1e-5)


@pytest.mark.skipif(os.environ.get('MEDKLIP_SLOW_TESTS') != '1', reason="inductor's CPU code generation takes 2-3 minutes here: MEDKLIP_SLOW_TESTS=1")
@pytest.mark.skipif(not shutil.which(os.environ.get('CXX', 'g++')), reason="no C++ compiler for inductor (apt-get install g++)")
def test_compiled_with_inductor(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv('MEDKLIP_GPU_PATHS_ON_CPU', '1')
    eager = _run(corpus, tmp_path/'eager', max_steps=2)
    compiled = _run(corpus, tmp_path/'compiled', max_steps=2, compile=True)
    assert compiled['loss'] == pytest.approx(eager['loss'], rel=1e-3)
