"bench/gpu.py: without a CUDA GPU it says so and exits 0; its phases run end to end on a tiny CPU configuration."
import importlib.util, subprocess, sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _gpu_bench():
    spec = importlib.util.spec_from_file_location('gpu_bench', ROOT/'bench'/'gpu.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


def test_without_cuda_it_says_so_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert _gpu_bench().main([]) == 0
    out = capsys.readouterr().out
    assert 'no CUDA GPU' in out and 'images_per_s' not in out


def test_cli_without_gpu_exits_0():
    env = {'CUDA_VISIBLE_DEVICES': '', 'PYTHONPATH': str(ROOT), 'HF_HUB_OFFLINE': '1', 'PATH': '/usr/bin:/bin'}
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'gpu.py')], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and 'no CUDA GPU' in r.stdout, r.stdout + r.stderr


@pytest.mark.gpu_rehearsal
def test_tiny_cpu_run_covers_every_phase(capsys, monkeypatch):
    "Every phase runs on the CPU through the GPU paths (bf16 autocast, channels_last); tests/test_gpu_paths.py compiles pretrain's step."
    seen, real = [], torch.autocast
    monkeypatch.setattr(torch, 'autocast', lambda *a, **k: seen.append((a, k)) or real(*a, **k))
    assert _gpu_bench().main(['--device', 'cpu', '--tiny']) == 0
    out = capsys.readouterr().out
    assert '"phase": "train eager"' in out and '"phase": "zeroshot inference"' in out and 'summary:' in out
    assert '"images_per_s": null' not in out
    assert seen and all(a == ('cpu',) and k['dtype'] == torch.bfloat16 and k.get('enabled', True) for a, k in seen)
