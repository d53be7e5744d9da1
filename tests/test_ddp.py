"Multi-process pretraining through torchrun (DDP on the gloo backend, 2 CPU processes) with the GPU paths on: the path multi-GPU users take."
import json, os, subprocess, sys
import pandas as pd, pytest, torch
import medklip.train as T


@pytest.mark.gpu_rehearsal
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="torch built without gloo")
def test_torchrun_two_processes(tmp_path):
    T.make_synthetic_corpus(tmp_path, n=24, size=48)
    (tmp_path / 'params.yaml').write_text("pretrain: {backbone: tiny, image_size: 48, d_model: 32, layers: 1, heads: 2, ffn: 64, "
                                          "batch_size: 4, epochs: 2, lr: 1.0e-3, warmup_steps: 1, threads: 1, seed: 0, workers: 1, log_every: 2}\n")
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m', 'medklip.cli', 'pretrain',
           '--store', 'store', '--triplets', 'triplets.jsonl', '--knowledge', 'knowledge', '--out', 'out', '--params', 'params.yaml']
    # MEDKLIP_GPU_PATHS_ON_CPU: bf16 autocast, channels_last and a loader worker per process, as on GPUs (nccl there)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'MEDKLIP_GPU_PATHS_ON_CPU': '1'}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    model, meta = T.load_checkpoint(tmp_path / 'out')  # written once, by rank 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # 2 processes x batch 4 share each step: an epoch of the train split takes half the steps one process would
    n_train = int((pd.read_csv(tmp_path / 'store' / 'index.csv')['split'] == 'train').sum())
    assert json.loads(r.stdout.strip().splitlines()[-1])['steps'] == 2 * (n_train // 8), r.stdout[-2000:]
    logged = [int(l.split('\t')[0]) for l in (tmp_path/'out'/'dvclive'/'plots'/'metrics'/'train'/'loss.tsv').read_text().splitlines()[1:]]
    spe = n_train // 8
    assert logged == sorted({k for k in range(1, 2 * spe + 1) if k % 2 == 0 or k % spe == 0}), logged   # rank 0 logs, every 2 steps and epoch ends
