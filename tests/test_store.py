"medklip prepare / ImageStore: contents, skip report, atomic replacement, CLI, the output lock, workers dying with a killed run."
import json, os, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medklip.cli import main
from medklip.core import MedklipError
from medklip.data.io import read_image
from medklip.data.store import ImageStore, prepare_store, resize_uint8


def tb_tree(root, n=8, bad=()):
    ids = [f"CHNCXR_{k:04d}_{k % 2}" for k in range(n)]
    for k, i in enumerate(ids):
        p = root / f"images/{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        if k in bad: p.write_bytes(b"")
        else: Image.fromarray(((np.arange(30 * 50).reshape(30, 50) * (k + 1)) % 256).astype(np.uint8)).save(p)
    pd.DataFrame(dict(image_id=ids, patient_id=ids, image_path=[f"images/{i}.png" for i in ids], view="PA",
                      tuberculosis=[k % 2 for k in range(n)])).to_csv(root / "labels.csv", index=False)
    return ids


def test_store_contents(tmp_path):
    ids = tb_tree(tmp_path)
    meta = prepare_store("tb", tmp_path, tmp_path / "st", size=24, progress=False)
    st = ImageStore(tmp_path / "st")
    assert len(st) == meta["n"] == 8 and st.images.shape == (8, 24, 24) and st.images.dtype == np.uint8
    assert isinstance(st.images, np.memmap)
    assert st.index.columns.tolist() == ["row", "image_id", "study_id", "patient_id", "split", "view", "image_path", "orig_h", "orig_w"]
    assert st.index["image_id"].tolist() == ids and (st.index[["orig_h", "orig_w"]].to_numpy() == [30, 50]).all()
    assert st.labels.dtype == np.float32 and st.labels[:, 0].tolist() == [k % 2 for k in range(8)]
    assert st.pathologies == ["Tuberculosis"] and meta["skipped"] == []
    assert np.array_equal(st.images[3], resize_uint8(read_image(tmp_path / f"images/{ids[3]}.png")[0], 24))
    parts = [st.split_indices(s) for s in ("train", "validate", "test")]
    tr = parts[0]; assert 0 < len(tr) < 8 and meta["stats_from"] == "train"   # no validate/test pixel in the input normalisation
    assert abs(meta["mean"] - st.images[tr].mean() / 255) < 1e-6 and abs(meta["std"] - (st.images[tr] / 255).std()) < 1e-6
    assert abs(meta["mean"] - st.images[:].mean() / 255) > 1e-4
    ev = prepare_store("tb", tmp_path, tmp_path / "ev", size=24, splits=["test"], progress=False)   # no train row: all rows
    est = ImageStore(tmp_path / "ev")
    assert ev["stats_from"] == "all" and abs(ev["mean"] - est.images[:].mean() / 255) < 1e-6
    assert sorted(np.concatenate(parts).tolist()) == list(range(8))
    assert (st.index["split"].to_numpy()[parts[0]] == "train").all()


def test_store_skips_and_lists_bad_images(tmp_path):
    ids = tb_tree(tmp_path, bad=(2, 5))
    meta = prepare_store("tb", tmp_path, tmp_path / "st", size=16, progress=False, workers=2)
    assert meta["n"] == 6 and meta["n_requested"] == 8
    assert [s["path"].rsplit("/", 1)[1] for s in meta["skipped"]] == [f"{ids[2]}.png", f"{ids[5]}.png"]
    assert all("empty" in s["reason"] for s in meta["skipped"])
    st = ImageStore(tmp_path / "st")
    assert ids[2] not in st.index["image_id"].tolist() and len(st.labels) == 6
    assert json.loads((tmp_path / "st/meta.json").read_text())["skipped"] == meta["skipped"]


def test_store_all_bad_fails_and_keeps_old(tmp_path):
    tb_tree(tmp_path, n=2)
    prepare_store("tb", tmp_path, tmp_path / "st", size=8, progress=False)
    for p in (tmp_path / "images").iterdir(): p.write_bytes(b"")
    with pytest.raises(MedklipError, match="none of the 2 images"): prepare_store("tb", tmp_path, tmp_path / "st", size=8, progress=False)
    assert len(ImageStore(tmp_path / "st")) == 2          # the old store is intact
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_store_replaces_atomically(tmp_path):
    tb_tree(tmp_path, n=4)
    prepare_store("tb", tmp_path, tmp_path / "st", size=8, progress=False)
    prepare_store("tb", tmp_path, tmp_path / "st", size=12, progress=False)
    assert ImageStore(tmp_path / "st").images.shape == (4, 12, 12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "labels.csv", "st"]


def test_cli(tmp_path, capsys):
    tb_tree(tmp_path, n=6, bad=(1,))
    rc = main(["prepare", "--dataset", "tb", "--root", str(tmp_path), "--out", str(tmp_path / "st"), "--size", "16",
               "--split", "train", "validate", "test", "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0 and "stored 5 of 6" in err and "skipped 1 unreadable" in err and "meta.json" in err
    assert main(["prepare", "--dataset", "tb", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_imagestore_errors(tmp_path):
    with pytest.raises(MedklipError, match="medklip prepare"): ImageStore(tmp_path)


def test_real_tb_store(shared_dir, tmp_path):
    root = shared_dir / "data/tb_montgomery_shenzhen"
    meta = prepare_store("tb", root, tmp_path / "st", size=32, splits=["test"], progress=False)
    st = ImageStore(tmp_path / "st")
    assert len(st) == meta["n"] > 50 and (st.index["split"] == "test").all() and 0.2 < meta["mean"] < 0.8


def test_anatomy_maps_line_up_with_images(tmp_path):
    "The stored anatomy maps are nearest-resized like the images, in the same row order, ids only; a missing map is background."
    ids = tb_tree(tmp_path, n=4)
    an = tmp_path / "anat"; an.mkdir()
    for k, i in enumerate(ids[:3]):  # region 1 marks the same pixels that are bright in a marker image
        img = np.zeros((30, 50), np.uint8); img[5:20, 10 + k:30 + k] = 255
        Image.fromarray(img).save(tmp_path / f"images/{i}.png")
        Image.fromarray((img > 0).astype(np.uint8)).save(an / f"{i}.png")
    (an / "regions.json").write_text(json.dumps({"1": "right_mid_lung"}))
    meta = prepare_store("tb", tmp_path, tmp_path / "store", size=20, progress=False, anatomy=an)
    st = ImageStore(tmp_path / "store")
    assert st.anatomy.shape == st.images.shape and st.anatomy.dtype == np.uint8
    assert meta["anatomy"]["missing"] == 1 and st.position_regions == {"right_mid_lung": [1]}
    for k in range(3):
        assert set(np.unique(st.anatomy[k])) == {0, 1}
        agree = ((st.images[k] > 127) == (st.anatomy[k] == 1)).mean()
        assert agree > 0.95, (k, agree)
    assert st.anatomy[3].max() == 0


def test_anatomy_bad_table_and_missing_maps(tmp_path):
    ids = tb_tree(tmp_path, n=2)
    an = tmp_path / "anat"; an.mkdir()
    with pytest.raises(MedklipError, match="regions.json"): prepare_store("tb", tmp_path, tmp_path / "s", size=8, progress=False, anatomy=an)
    (an / "regions.json").write_text(json.dumps({"1": "right_mid_lung"}))
    with pytest.raises(MedklipError, match="none of the 2 images"): prepare_store("tb", tmp_path, tmp_path / "s", size=8, progress=False, anatomy=an)
    assert not (tmp_path / "s").exists()


def test_prepare_resumes_after_interruption(tmp_path, monkeypatch):
    import medklip.data.store as ms
    tb_tree(tmp_path, n=300)
    (tmp_path / ".st.tmp-stale").mkdir(); (tmp_path / ".st.old-x").mkdir(); (tmp_path / ".st.v2.tmp-keep").mkdir()
    orig, calls = ms._load_one, []
    def flaky(a):
        calls.append(a[0])
        if len(calls) == 300: raise KeyboardInterrupt
        return orig(a)
    monkeypatch.setattr(ms, "_load_one", flaky)
    with pytest.raises(KeyboardInterrupt): prepare_store("tb", tmp_path, tmp_path / "st", size=8, progress=False, workers=1)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert len(left) == 2 and left[0].startswith(".st.tmp-") and left[1] == ".st.v2.tmp-keep"   # debris of st removed, not of st.v2
    assert not (tmp_path / "st").exists()
    calls.clear(); msgs = []
    monkeypatch.setattr(ms, "_load_one", lambda a: (calls.append(a[0]), orig(a))[1])
    meta = prepare_store("tb", tmp_path, tmp_path / "st", size=8, progress=False, workers=1, log=msgs.append)
    assert len(calls) == 44 and "at image 256 of 300" in msgs[0]
    monkeypatch.setattr(ms, "_load_one", orig)
    ref = prepare_store("tb", tmp_path, tmp_path / "ref", size=8, progress=False, workers=2)
    assert np.array_equal(ImageStore(tmp_path / "st").images[:], ImageStore(tmp_path / "ref").images[:])
    assert abs(meta["mean"] - ref["mean"]) < 1e-12 and meta["n"] == ref["n"] and meta["skipped"] == ref["skipped"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".st.v2.tmp-keep"]


def test_prepare_workers_default_all_cores(tmp_path, monkeypatch):
    import medklip.data.store as ms
    seen = []
    class Pool(ms.ProcessPoolExecutor):
        def __init__(self, n, **kw): seen.append(n); super().__init__(min(n, 2), **kw)
    monkeypatch.setattr(ms, "ProcessPoolExecutor", Pool); monkeypatch.setattr(ms.os, "cpu_count", lambda: 7)
    tb_tree(tmp_path, n=4)
    prepare_store("tb", tmp_path, tmp_path / "st", size=8, progress=False)
    assert seen == [7]


def test_store_is_location_independent(tmp_path, monkeypatch):
    "The same dataset prepared from two checkouts at different paths gives byte-identical index and meta (no absolute paths)."
    out = {}
    for where in ('a', 'b/deeper'):
        proj = tmp_path/where; (proj/'data').mkdir(parents=True)
        tb_tree(proj/'data', bad=(3,))
        monkeypatch.chdir(proj)
        prepare_store('tb', 'data', 'st', size=16, progress=False, workers=1)
        out[where] = [(proj/'st'/f).read_bytes() for f in ('index.csv', 'meta.json')]
    assert out['a'] == out['b/deeper']
    meta = json.loads(out['a'][1])
    assert meta['root'] == 'data' and not meta['skipped'][0]['path'].startswith('/')
    assert not any(str(tmp_path) in b.decode() for b in out['a'])


def _children(pid):
    "Pids of the live (not zombie) processes whose parent is `pid` (Linux /proc)."
    out = []
    for d in Path("/proc").iterdir():
        try: st = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError): continue
        if st[1] == str(pid) and st[0] != "Z": out.append(int(d.name))
    return out


def _alive(pid):
    try: return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError: return False


def test_second_prepare_is_refused_and_killed_prepare_leaves_no_workers(tmp_path):
    "While one prepare writes --out a second gets a one-line error naming its pid; SIGKILL on it ends its workers; the next run takes the lock over."
    if not Path("/proc/self/stat").exists(): pytest.skip("needs Linux /proc")
    tb_tree(tmp_path, n=40)
    script = (f"import time, medklip.data.store as ms\norig = ms.read_image\n"
              f"ms.read_image = lambda *a, **k: (time.sleep(0.5), orig(*a, **k))[1]\n"
              f"ms.prepare_store('tb', {str(tmp_path)!r}, {str(tmp_path / 'st')!r}, size=8, progress=False, workers=2)\n")
    repo = str(Path(__file__).resolve().parents[1])
    p = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=repo, OMP_NUM_THREADS="1"))
    try:
        kids, t0 = [], time.time()
        while len(kids) < 2 and time.time() - t0 < 60 and p.poll() is None: time.sleep(0.1); kids = _children(p.pid)
        assert len(kids) >= 2, "the prepare subprocess never started its workers"
        assert (tmp_path / ".st.lock").read_text().strip() == str(p.pid)
        with pytest.raises(MedklipError, match=rf"^another prepare is writing {tmp_path / 'st'} \(pid {p.pid}\); wait"):
            prepare_store("tb", tmp_path, tmp_path / "st", size=8, progress=False, workers=1)
    finally: p.kill(); p.wait()
    t0 = time.time()
    while any(map(_alive, kids)) and time.time() - t0 < 10: time.sleep(0.1)
    assert not any(map(_alive, kids)), "workers outlived their killed prepare"
    assert (tmp_path / ".st.lock").exists()   # the dead run's lock is left, stale
    meta = prepare_store("tb", tmp_path, tmp_path / "st", size=8, progress=False, workers=1, log=lambda m: None)
    assert meta["n"] == 40 and not (tmp_path / ".st.lock").exists()


def test_stale_lock_of_dead_pid_is_taken_over(tmp_path):
    tb_tree(tmp_path, n=3)
    (tmp_path / ".st.lock").write_text("999999999\n")
    assert prepare_store("tb", tmp_path, tmp_path / "st", size=8, progress=False, workers=1)["n"] == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_damaged_store_files_are_one_line_errors(tmp_path):
    "A truncated images.npy or labels.npy, or a broken meta.json: an InputError naming the file and saying to re-run prepare."
    tb_tree(tmp_path, n=4)
    prepare_store("tb", tmp_path, tmp_path / "st", size=16, progress=False, workers=1)
    for name, cut in (("images.npy", 500), ("labels.npy", 20), ("meta.json", 10)):
        f = tmp_path / "st" / name; good = f.read_bytes(); f.write_bytes(good[:cut])
        with pytest.raises(MedklipError, match=rf"{name}: damaged store file.*re-run `medklip prepare`") as e: ImageStore(tmp_path / "st")
        assert "\n" not in str(e.value)
        f.write_bytes(good)
    assert len(ImageStore(tmp_path / "st")) == 4
