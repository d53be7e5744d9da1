"Demo corpus generator: determinism, MIMIC-CXR-JPG layout, masks in their regions, labels, unseen finding, idempotency."
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medklip.core import MedklipError
from medklip.data.demo import (CHEXPERT_COLUMNS, DemoParams, demo_data_cli, demo_findings, demo_spec, generate_demo,
                               read_manifest, unseen_finding)

SMALL = dict(n_patients=12, size=(96, 120), unseen_rate=0.6)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "demo"
    generate_demo(out, DemoParams(seed=3, **SMALL))
    return out


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_and_seed_dependent(tmp_path, corpus):
    generate_demo(tmp_path / "a", DemoParams(seed=3, **SMALL))
    assert _tree(tmp_path / "a") == _tree(corpus)
    generate_demo(tmp_path / "b", DemoParams(seed=4, **SMALL))
    b = _tree(tmp_path / "b")
    assert pd.read_csv(tmp_path / "b/demo/labels.csv").drop(columns=["dicom_id", "study_id"]).to_csv() != \
        pd.read_csv(corpus / "demo/labels.csv").drop(columns=["dicom_id", "study_id"]).to_csv() or b.keys() != _tree(corpus).keys()


def test_layout(corpus):
    meta = pd.read_csv(corpus / "mimic-cxr-2.0.0-metadata.csv")
    split = pd.read_csv(corpus / "mimic-cxr-2.0.0-split.csv")
    chex = pd.read_csv(corpus / "mimic-cxr-2.0.0-chexpert.csv")
    assert {"dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns"} <= set(meta.columns)
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    assert list(chex.columns) == ["subject_id", "study_id", *CHEXPERT_COLUMNS]
    assert set(split.split) <= {"train", "validate", "test"} and split.groupby("subject_id").split.nunique().max() == 1
    assert set(chex.drop(columns=["subject_id", "study_id"]).stack().unique()) <= {1.0, 0.0, -1.0}
    for r in meta.itertuples():
        s = str(r.subject_id)
        img = Image.open(corpus / f"files/p{s[:2]}/p{s}/s{r.study_id}/{r.dicom_id}.jpg")
        assert img.mode == "L" and img.size == (r.Columns, r.Rows)
        assert (corpus / f"mimic-cxr-reports/files/p{s[:2]}/p{s}/s{r.study_id}.txt").exists()
        anat = np.array(Image.open(corpus / f"demo/anatomy/{r.dicom_id}.png"))
        assert anat.shape == (r.Rows, r.Columns)
    regions = json.loads((corpus / "demo/anatomy_regions.json").read_text())
    assert set(regions.values()) == set(demo_spec()["regions"].values())
    m = read_manifest(corpus)
    assert m["seed"] == 3 and m["unseen_finding"] == "pneumoperitoneum" and m["n_images"] == len(meta)


def test_masks_inside_image_and_region(corpus):
    f = pd.read_csv(corpus / "demo/findings.csv")
    meta = pd.read_csv(corpus / "mimic-cxr-2.0.0-metadata.csv").set_index("dicom_id")
    pos = read_manifest(corpus)["position_regions"]
    assert len(f) > 0
    for r in f.itertuples():
        mask = np.array(Image.open(corpus / r.mask)) > 0
        assert mask.shape == (meta.Rows[r.dicom_id], meta.Columns[r.dicom_id]) and mask.sum() == r.area > 0
        ys, xs = np.nonzero(mask)
        assert (r.x0, r.y0, r.x1, r.y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        anat = np.array(Image.open(corpus / f"demo/anatomy/{r.dicom_id}.png"))
        assert np.isin(anat[mask], pos[r.position]).all(), (r.dicom_id, r.finding, r.position)


def test_labels_match_findings(corpus):
    f = pd.read_csv(corpus / "demo/findings.csv")
    lab = pd.read_csv(corpus / "demo/labels.csv")
    assert list(lab.columns) == ["dicom_id", "study_id", "split", *demo_findings()]
    have = set(zip(f.dicom_id, f.finding))
    for r in lab.itertuples(index=False):
        for k in demo_findings(): assert getattr(r, k) == int((r.dicom_id, k) in have)


def test_unseen_finding_never_named_nor_in_train(corpus):
    lab = pd.read_csv(corpus / "demo/labels.csv")
    u = unseen_finding()
    assert lab.loc[lab.split == "train", u].sum() == 0 and lab.loc[lab.split != "train", u].sum() > 0
    words = ("pneumoperitoneum", "free air", "subdiaphragmatic")
    for p in (corpus / "mimic-cxr-reports").rglob("*.txt"):
        assert not any(w in p.read_text().lower() for w in words)


def test_reports_phrasing_and_chexpert(corpus):
    texts = [p.read_text() for p in (corpus / "mimic-cxr-reports").rglob("*.txt")]
    assert all("FINDINGS:" in t and "IMPRESSION:" in t for t in texts)
    joined = "\n".join(texts).lower()
    assert "no " in joined and any(w in joined for w in ("possible", "may represent", "cannot be excluded"))
    chex = pd.read_csv(corpus / "mimic-cxr-2.0.0-chexpert.csv")
    lab = pd.read_csv(corpus / "demo/labels.csv").merge(chex, on="study_id")
    # a finding present in the image is stated (1), uncertain (-1) or missed (blank, label noise), never negated
    assert set(lab.loc[lab.effusion == 1, "Pleural Effusion"].dropna()) <= {1.0, -1.0}
    assert set(lab.loc[lab.pneumothorax == 1, "Pneumothorax"].dropna()) <= {1.0, -1.0}
    assert lab.loc[lab.effusion == 1, "Pleural Effusion"].notna().mean() > .7     # most are reported
    assert (lab.loc[lab[demo_findings(seen=True)].sum(axis=1) == 0, "No Finding"] == 1).all()


def test_idempotent_cli_and_guard(tmp_path, capsys):
    out = tmp_path / "d"
    args = ["--out", str(out), "--seed", "1", "--n-patients", "4", "--size", "80"]
    assert demo_data_cli(args) == 0
    stamp = (out / "demo/manifest.json").stat().st_mtime_ns
    assert demo_data_cli(args) == 0 and "already complete" in capsys.readouterr().out
    assert (out / "demo/manifest.json").stat().st_mtime_ns == stamp
    assert demo_data_cli(args[:-1] + ["88"]) == 0 and read_manifest(out)["params"]["size"] == [88, 88]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    (tmp_path / "other").mkdir(); (tmp_path / "other/keep.txt").write_text("x")
    with pytest.raises(MedklipError, match="holds no medklip demo corpus"): generate_demo(tmp_path / "other", DemoParams(n_patients=3))


def test_config_section(tmp_path):
    cfg = tmp_path / "params.yaml"
    cfg.write_text(f"demo_data:\n  out: {tmp_path/'x'}\n  seed: 5\n  n_patients: 3\n  size: [72, 80]\n")
    assert demo_data_cli(["--config", str(cfg)]) == 0 and read_manifest(tmp_path / "x")["seed"] == 5
    cfg.write_text("demo_data:\n  n_patinets: 3\n")
    with pytest.raises(MedklipError, match="unknown key"): demo_data_cli(["--config", str(cfg), "--out", str(tmp_path / "y")])


def test_harder_world_knobs():
    from medklip.data.demo import draw_geometry, render_image, write_report
    with pytest.raises(MedklipError, match='contrast'): DemoParams(contrast=(0, 1))
    with pytest.raises(MedklipError, match='missed_rate'): DemoParams(missed_rate=1.5)
    rng = np.random.default_rng(0); g = draw_geometry(rng)
    find = [('nodule', 'right_mid_lung', False)]
    img1, _, d1 = render_image(np.random.default_rng(1), 200, 200, g, find)
    img2, _, d2 = render_image(np.random.default_rng(1), 200, 200, g, find, contrast=(.3, .3))
    m = d1[0]['mask']; bg = ~m
    lift = lambda im: im[m].mean() - im[bg].mean()
    assert lift(img2) < .6 * lift(img1)                              # a subtler finding: less contrast over its background
    r0, _ = write_report(np.random.default_rng(2), d1, 0., missed_rate=0.)
    r1, _ = write_report(np.random.default_rng(2), d1, 0., missed_rate=1.)
    assert 'nodule' in r0.lower() and 'nodule' not in r1.lower()     # a missed mention: drawn but not reported


def test_attributes_named_by_the_knowledge_base():
    "Each finding's packaged description names its attributes; the unseen one is its own combination, copying no seen text."
    from medklip.text.knowledge import load_knowledge
    kb, fs = load_knowledge(), demo_spec()["findings"]
    for k, f in fs.items():
        t = kb.text(k).lower()
        for a, ws in f["words"].items(): assert any(w in t for w in ws), (k, a, ws)
    u, seen = unseen_finding(), demo_findings(seen=True)
    combo = lambda k: tuple(fs[k]["attributes"][a] for a in ("density", "shape", "place"))
    assert all(combo(u) != combo(k) and fs[u]["attributes"]["place"] != fs[k]["attributes"]["place"] for k in seen)
    ut = kb.text(u).lower()
    for k in seen:
        st = kb.text(k).lower()
        assert not any(len(s.strip()) > 20 and s.strip() in ut for s in st.replace(";", ".").split("."))


@pytest.mark.parametrize("name,position", [("effusion", "left_pleural"), ("consolidation", "lower_right_lobe"), ("nodule", "right_mid_lung"),
                                           ("mass", "left_upper_lung"), ("atelectasis", "right_lower_lung"), ("edema", "pulmonary"),
                                           ("pneumothorax", "right_apical_lung"), ("pneumoperitoneum", "right_diaphragm")])
def test_findings_are_added_not_pasted(name, position):
    "A finding changes density on top of the anatomy: its sign follows its density attribute and what lies beneath still shows."
    from medklip.data.demo import _base_image, _draw_finding, _grid, anatomy_map, draw_geometry
    rng = np.random.default_rng(5); g = draw_geometry(rng); h, w = 160, 144
    u, v = _grid(h, w, g["angle"]); anat = anatomy_map(u, v, g)
    before, lungs = _base_image(rng, u, v, g, h, w, anat)
    after = before.copy()
    m, _ = _draw_finding(np.random.default_rng(6), name, position, False, after, u, v, g, anat, lungs, h, w, 1.)
    assert m.sum() > 0
    d = after - before
    lucent = demo_spec()["findings"][name]["attributes"]["density"] == "lucency"
    inner = ndimage_erode(m)
    core = d[inner] if inner.any() else d[m]
    assert (core < 0).mean() > .9 if lucent else (core > 0).mean() > .9
    r = inner if inner.sum() > 10 else m      # the interior: the soft edge's ramp adds variance of its own
    if before[r].std() > 1e-3: assert np.corrcoef(before[r], after[r])[0, 1] > .3    # the anatomy beneath shows through


def ndimage_erode(m):
    from scipy import ndimage
    return ndimage.binary_erosion(m, iterations=2)


def test_label_noise_and_cooccurrence():
    from medklip.data.demo import _draw_findings, write_report
    d = [dict(finding="nodule", position="right_mid_lung", faint=False, cm="1.2")]
    _, chex = write_report(np.random.default_rng(0), d, 0., hedge_rate=1.)
    assert chex["Lung Lesion"] == -1                                  # a clear finding reported hedged
    _, chex = write_report(np.random.default_rng(0), d, 0., hedge_rate=0.)
    assert chex["Lung Lesion"] == 1
    p = DemoParams(normal_rate=0., max_findings=1, n_patients=3)
    rng = np.random.default_rng(0)
    draws = [{f for f, _, _ in _draw_findings(rng, p, "train")} for _ in range(600)]
    eff = lambda cond: np.mean([("effusion" in s) for s in draws if cond(s)])
    assert eff(lambda s: "edema" in s) > .3 > eff(lambda s: "edema" not in s and "consolidation" not in s)
    texts = " ".join(write_report(np.random.default_rng(i), d, 0.)[0].lower() for i in range(40))
    assert "opacity" in texts and "nodule" in texts                   # reports use the attribute vocabulary too


def test_demo_knowledge_reaches_the_pipeline_and_copies_no_seen_text():
    "The demo's descriptions are the packaged knowledge base (knowledge.kb_file '' = packaged), which embed-knowledge and zeroshot both read."
    import re
    import yaml
    from medklip.eval.infer import resolve_query
    from medklip.text.knowledge import load_knowledge
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert not params["knowledge"]["kb_file"]                          # the packaged KB is the one the DVC stages embed
    kb, u = load_knowledge(), unseen_finding()
    q = resolve_query(u, "demo", "description")
    assert q.kind == "extra" and q.text == kb.text(u) and resolve_query(u, "demo", "name").text == kb.find(u).name
    words = lambda t: re.findall(r"[a-z]+", t.lower())
    grams = lambda t, n=4: {tuple(words(t)[i:i + n]) for i in range(len(words(t)) - n + 1)}
    for k in demo_findings(seen=True):
        assert not grams(kb.text(k)) & grams(q.text), k              # no 4-word run of a seen description in the unseen one
        assert resolve_query(k, "demo", "description").kind == "entity"  # seen findings are vocabulary entities


def test_skin_fold_is_a_line_without_the_pneumothorax_lucency():
    "A skin fold (the pneumothorax mimic) brightens a thin line over an upper lung and darkens nothing; a pneumothorax darkens the apex."
    from medklip.data.demo import draw_geometry, render_image, _skin_fold, _grid
    with pytest.raises(MedklipError, match='mimic_rate'): DemoParams(mimic_rate=2)
    g = draw_geometry(np.random.default_rng(0))
    u, v = _grid(256, 256, g['angle'])
    add = np.zeros((256, 256), np.float32)
    _skin_fold(np.random.default_rng(3), add, u, v, g, 256)
    assert (add > .03).sum() > 30 and (add > .03).mean() < .02   # a thin line appears ...
    assert add.min() >= 0                                        # ... and nothing turns darker
    assert (add > .03)[:128].sum() > (add > .03)[128:].sum()      # over the upper chest
    ptx = np.zeros((256, 256), np.float32)
    from medklip.data.demo import _draw_finding, anatomy_map, _base_image
    anat = anatomy_map(u, v, g); _, lungs = _base_image(np.random.default_rng(4), u, v, g, 256, 256, anat)
    m, _ = _draw_finding(np.random.default_rng(3), 'pneumothorax', 'right_apical_lung', False, ptx, u, v, g, anat, lungs, 256, 256)
    assert ptx[m].mean() < -.05                                  # the pneumothorax band is darker than the lung it replaces
