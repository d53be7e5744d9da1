"""No host-device sync in a training step between its start and the loss (issue 20's GPU step), checked on the CPU.

`torch.cuda.set_sync_debug_mode` needs CUDA, so `NoSync` (a TorchFunctionMode) fails on what would sync on a GPU:
`.item()`, `.tolist()`, `.cpu()`, `bool/int/float(tensor)` (a Python branch on a tensor), `nonzero`/`argwhere`/`unique`/
`masked_select`/one-argument `where` and boolean-mask indexing (data-dependent shapes), and `torch.tensor(host data,
device=...)` (a blocking host-to-device copy). Host-side index tensors from the loader may use `.numpy()` (on a GPU
tensor that raises, so it cannot hide a sync). The optimiser step and backward are not looked at (AdamW's step
counters live on the host)."""
import pytest
import torch
from torch.overrides import TorchFunctionMode

import medklip.train as T
from medklip.losses import existence_loss, medklip_loss, position_loss, sample_position_candidates
from medklip.methods.gkmvlp import add_synthetic_anatomy
from medklip.methods.medfilip import MedFILIPLoss

pytestmark = pytest.mark.gpu_rehearsal
Tensor = torch.Tensor
SYNCS = {Tensor.item, Tensor.tolist, Tensor.cpu, Tensor.__bool__, Tensor.__int__, Tensor.__float__, Tensor.nonzero, torch.nonzero,
         Tensor.argwhere, torch.argwhere, Tensor.unique, torch.unique, torch.unique_consecutive, Tensor.masked_select, torch.masked_select}


def _bool_index(idx):
    idx = idx if isinstance(idx, tuple) else (idx,)
    return any(torch.is_tensor(i) and i.dtype == torch.bool for i in idx)


class NoSync(TorchFunctionMode):
    "Raise on every op that would make the host wait for the device (while `armed`)."
    def __init__(self): super().__init__(); self.armed = True
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.armed:
            bad = (func in SYNCS or (func is torch.where and len(args) + len(kwargs) == 1)
                   or (func in (Tensor.__getitem__, Tensor.__setitem__) and _bool_index(args[1]))
                   or (func in (torch.tensor, torch.as_tensor) and kwargs.get('device') is not None and not torch.is_tensor(args[0])))
            if bad: raise AssertionError(f"host-device sync in a training step: {getattr(func, '__qualname__', func)}")
        return func(*args, **kwargs)


def test_guard_catches_the_old_patterns():
    t = torch.tensor([-1, 0, 1])
    for f in (lambda: bool((t >= 0).any()), lambda: t[t > 0], lambda: (t > 0).nonzero(), lambda: t.sum().item(),
              lambda: torch.tensor([1, 2], device=t.device), lambda: torch.where(t > 0), lambda: t.unique()):
        with NoSync(), pytest.raises(AssertionError, match='sync'): f()
    with NoSync(): torch.where(t > 0, t, 0).sum(); t[torch.tensor([0, 2])]


@pytest.mark.parametrize('amp', [False, True])
def test_losses_without_sync_and_all_masked_zero_with_graph(amp):
    "The MedKLIP losses run without a sync (bf16 logits too); a batch with nothing labelled gives 0 with a gradient path."
    g = torch.Generator().manual_seed(0)
    dt = torch.bfloat16 if amp else torch.float32
    for fill in (-1, None):
        m = torch.full((3, 51, 75), -1, dtype=torch.int8)
        if fill is None: m[0, 4, 2] = 1; m[1, 7, 3] = 0; m[2, 9, 2] = 1
        out = dict(logits=torch.randn(3, 75, 2, generator=g).to(dt).requires_grad_(),
                   position=torch.randn(3, 75, 16, generator=g).to(dt).requires_grad_())
        with NoSync():
            loss, parts = medklip_loss(out, m, torch.randn(51, 16, generator=g), generator=torch.Generator().manual_seed(1))
        loss.backward()
        assert torch.isfinite(out['logits'].grad).all() and torch.isfinite(out['position'].grad).all()
        if fill == -1: assert loss.item() == 0 and out['logits'].grad.abs().sum() == 0
        else: assert loss.item() > 0 and out['logits'].grad.abs().sum() > 0 and out['position'].grad[0, 2].abs().sum() > 0


def test_position_loss_equals_the_valid_cells_alone():
    "Scoring every cell with the invalid ones ignored gives exactly the loss over the valid cells alone (same order)."
    g = torch.Generator().manual_seed(3)
    m = torch.randint(-1, 2, (4, 51, 75), generator=g)
    pos, pe = torch.randn(4, 75, 32, generator=g), torch.randn(51, 32, generator=g)
    c, v = sample_position_candidates(m, 7, torch.Generator().manual_seed(0))
    ref = torch.nn.functional.cross_entropy(torch.einsum('nd,nkd->nk', pos[v], pe[c[v]]), torch.zeros(int(v.sum()), dtype=torch.long))
    assert torch.equal(position_loss(pos, pe, c, v), ref)
    assert torch.equal(existence_loss(pos[..., :2], m[:, 0]), torch.nn.functional.cross_entropy(pos[..., :2][m[:, 0] >= 0], m[:, 0][m[:, 0] >= 0]))


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    c = add_synthetic_anatomy(T.make_synthetic_corpus(tmp_path_factory.mktemp('nosync'), n=24, size=32))
    tp = c/'triplets.jsonl'   # a second finding on some images, so the GK-MVLP alignment has negatives
    tp.write_text(tp.read_text().replace('"exist": 1}]', '"exist": 1}, {"entity": "pneumothorax", "position": "left_pleural", "exist": 1}]', 6))
    return c


def test_training_step_without_sync(corpus, tmp_path, monkeypatch):
    """The GPU code path from augmentation (RandAugment's masked form) to the summed loss (forward in bf16, MedKLIP loss, GK-MVLP,
    aspects, MedFILIP): steps after the first never sync. (The CPU's RandAugment gathers the images of each op: no device there.)"""
    monkeypatch.setenv('MEDKLIP_GPU_PATHS_ON_CPU', '1')   # the paths a GPU takes: channels_last, bf16 autocast, masked RandAugment
    mode, steps, inside = NoSync(), [], []
    real_aug, real_note = T.augment, T._note_nonfinite
    def augment(*a, **k):   # the step's first op; the first step fills caches (region tables, the MedFILIP bank) and may sync
        steps.append(1); mode.armed = len(steps) > 1; mode.__enter__(); inside.append(1)
        return real_aug(*a, **k)
    def note(*a):           # after the loss: the step's float checks stay on the device
        r = real_note(*a); mode.__exit__(None, None, None); inside.pop(); return r
    monkeypatch.setattr(T, 'augment', augment); monkeypatch.setattr(T, '_note_nonfinite', note)
    mf = MedFILIPLoss(embed_fn=lambda texts: torch.randn(len(texts), 32, generator=torch.Generator().manual_seed(len(texts))))
    s = dict(backbone='tiny', image_size=32, stride=8, d_model=32, layers=1, heads=2, ffn=64, batch_size=6, epochs=1, lr=1e-3,
             warmup_steps=2, workers=0, val_batch_size=16, dropout=0.0, gkmvlp_weight=0.5, gkmvlp_attn_weight=0.5, aspect_weight=1.0)
    seen = []
    try: r = T.pretrain(corpus/'store', corpus/'triplets.jsonl', corpus/'knowledge', tmp_path, s, aux_losses=(mf,), callbacks=[seen.append],
                        log=lambda *a: None)
    finally:
        if inside: mode.__exit__(None, None, None)
    assert r['steps'] == len(steps) == 3 and all(k in seen[-1] for k in ('aux_gkmvlp', 'aux_gkmvlp_attn', 'aux_aspects', 'aux_medfilip'))
    assert seen[-1]['aux_gkmvlp'] > 0 and seen[-1]['aux_medfilip'] > 0
