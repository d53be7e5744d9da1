"Dataset loaders: miniature trees in each published layout, the item contract, splits, path safety, errors."
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medklip.core import InputError, MedklipError
from medklip.data.datasets import (DATASETS, get_dataset, hash_split, siim_rle_decode, siim_rle_encode)
from medklip.data.io import read_image, write_test_dicom

ITEM_KEYS = {"image_path", "image_id", "patient_id", "study_id", "view", "split", "labels", "report", "boxes", "has_mask"}


def img(path, h=20, w=16, v=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(((np.arange(h * w).reshape(h, w) * v) % 251).astype(np.uint8)).save(path)


def check_contract(ds):
    assert len(ds) == len(ds.csv) == len(ds.labels) > 0
    assert ds.labels.dtype == np.float32 and ds.labels.shape[1] == len(ds.pathologies)
    assert set(np.unique(ds.labels[~np.isnan(ds.labels)])) <= {0.0, 1.0}
    for c in ("image_path", "patient_id", "study_id", "image_id", "view", "split"): assert c in ds.csv
    assert set(ds.csv["split"]) <= {"train", "validate", "test"}
    it = ds[0]
    assert set(it) == ITEM_KEYS and it["labels"].shape == (len(ds.pathologies),)
    assert it["image_path"].startswith("/")
    for b in it["boxes"]: assert {"label", "x0", "y0", "x1", "y1"} <= set(b) and b["x1"] >= b["x0"]
    # a patient never spans two splits
    assert ds.csv.groupby("patient_id")["split"].nunique().max() == 1


def mimic_tree(root, n=6, demo=False):
    meta, spl, chx = [], [], []
    for k in range(n):
        sub, stu = 10000000 + k, 50000000 + k
        for j, view in enumerate(["PA", "LATERAL"]):
            did = f"d{k}_{j}"
            p = root / f"files/p{str(sub)[:2]}/p{sub}/s{stu}/{did}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(((np.arange(320).reshape(20, 16) * (k + 1)) % 251).astype(np.uint8)).save(p)
            meta.append(dict(dicom_id=did, subject_id=sub, study_id=stu, ViewPosition=view, Rows=20, Columns=16))
            spl.append(dict(dicom_id=did, study_id=stu, subject_id=sub, split=["train", "validate", "test"][k % 3]))
        chx.append(dict(subject_id=sub, study_id=stu, **{"Pleural Effusion": [1, 0, -1, np.nan][k % 4], "Edema": 0}))
        if k != n - 1:  # the last study has no report file
            rp = root / f"mimic-cxr-reports/files/p{str(sub)[:2]}/p{sub}/s{stu}.txt"
            rp.parent.mkdir(parents=True, exist_ok=True)
            rp.write_text(f"FINDINGS: effusion {k}.\nIMPRESSION: see findings.")
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    pd.DataFrame(spl).to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    pd.DataFrame(chx).to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    if demo:
        (root / "demo/masks").mkdir(parents=True)
        lab = pd.DataFrame(meta)[["dicom_id", "study_id"]].merge(pd.DataFrame(spl)[["dicom_id", "split"]])
        lab["effusion"] = [int(i % 3 == 0) for i in range(len(lab))]
        lab["pneumothorax"] = [int(i % 4 == 1) for i in range(len(lab))]
        lab.to_csv(root / "demo/labels.csv", index=False)
        m = np.zeros((20, 16), np.uint8); m[10:15, 2:6] = 255
        Image.fromarray(m).save(root / "demo/masks/d0_0__effusion.png")
        m2 = np.zeros((20, 16), np.uint8); m2[0:2, 0:2] = 255
        Image.fromarray(m2).save(root / "demo/masks/d0_0__pneumothorax.png")
        pd.DataFrame([dict(dicom_id="d0_0", study_id=50000000, finding="effusion", position="right_pleural",
                           x0=2, y0=10, x1=6, y1=15, mask="masks/d0_0__effusion.png")]).to_csv(root / "demo/findings.csv", index=False)
    return root


def test_mimic(tmp_path):
    ds = get_dataset("mimic", mimic_tree(tmp_path))
    check_contract(ds)
    assert len(ds) == 12 and ds.pathologies == ["Pleural Effusion", "Edema"]
    eff = ds.labels[::2, 0]
    assert eff[0] == 1 and eff[1] == 0 and np.isnan(eff[2]) and np.isnan(eff[3])
    assert ds.uncertain[4, 0] and not ds.uncertain[6, 0]   # study 2 is -1, study 3 blank
    assert read_image(ds[0]["image_path"])[1] == (20, 16)
    assert ds[0]["report"].startswith("FINDINGS: effusion 0") and ds[11]["report"] is None
    rep = ds.reports()
    assert len(rep) == 5 and rep.attrs["missing"] == ["50000005"]
    assert len(get_dataset("mimic", tmp_path, "validate")) == 4
    assert get_dataset("mimic", tmp_path, "test").csv["split"].eq("test").all()


def test_mimic_missing_csv_and_column(tmp_path):
    mimic_tree(tmp_path, n=2)
    (tmp_path / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(InputError, match="mimic-cxr-2.0.0-split"): get_dataset("mimic", tmp_path)
    pd.DataFrame(dict(dicom_id=["d0_0"], study_id=[1])).to_csv(tmp_path / "mimic-cxr-2.0.0-split.csv", index=False)
    with pytest.raises(InputError, match="missing column"): get_dataset("mimic", tmp_path)


def test_demo(tmp_path):
    ds = get_dataset("demo", mimic_tree(tmp_path, demo=True))
    check_contract(ds)
    assert ds.pathologies == ["effusion", "pneumothorax"]
    assert ds.labels[:, 0].tolist() == [float(i % 3 == 0) for i in range(12)]
    it = ds[0]
    assert it["has_mask"] and it["boxes"][0]["label"] == "effusion" and it["boxes"][0]["position"] == "right_pleural"
    assert ds.load_mask(0, "effusion").sum() == 20 and ds.load_mask(0).sum() == 24 and ds.load_mask(1) is None
    te = get_dataset("demo", tmp_path, "test")
    assert len(te) == 4 and (te.labels == ds.labels[ds.csv["split"].to_numpy() == "test"]).all()
    assert te[0]["report"] is not None


def test_chestxray14(tmp_path):
    rows = [("00000001_000.png", "Effusion|Infiltration", 1, "PA"), ("00000001_001.png", "No Finding", 1, "PA"),
            ("00000002_000.png", "Hernia", 2, "AP"), ("00000003_000.png", "Mass", 3, "PA")]
    pd.DataFrame(rows, columns=["Image Index", "Finding Labels", "Patient ID", "View Position"]).to_csv(tmp_path / "Data_Entry_2017.csv", index=False)
    for r in rows[:3]: img(tmp_path / "images_002/images" / r[0])
    (tmp_path / "test_list.txt").write_text("00000002_000.png\n")
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000003_000.png\n")
    pd.DataFrame([["00000002_000.png", "Infiltrate", 10.0, 20.0, 30.0, 40.0]],
                 columns=["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]).to_csv(tmp_path / "BBox_List_2017.csv", index=False)
    ds = get_dataset("chestxray14", tmp_path)
    check_contract(ds)
    assert ds.labels[0, ds.pathologies.index("Effusion")] == 1 and ds.labels[1].sum() == 0
    assert ds[2]["split"] == "test" and ds[0]["split"] != "test"
    assert ds[2]["boxes"] == [dict(label="Infiltration", x0=10.0, y0=20.0, x1=40.0, y1=60.0)]
    assert "images_002" in ds[0]["image_path"] and ds[3]["image_path"].endswith("images/00000003_000.png")
    assert ds[0]["patient_id"] == "00000001"


def test_chexpert_layout_and_escape(tmp_path):
    sub = tmp_path / "CheXpert-v1.0"
    sub.mkdir()
    df = pd.DataFrame({"Path": ["CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg",
                                "CheXpert-v1.0/train/patient00002/study1/view1_frontal.jpg"],
                       "Frontal/Lateral": ["Frontal", "Frontal"], "AP/PA": ["PA", "AP"],
                       "No Finding": [1.0, np.nan], "Pleural Effusion": [0.0, -1.0]})
    df.to_csv(sub / "train.csv", index=False)
    df.iloc[:1].assign(Path="CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg").to_csv(sub / "valid.csv", index=False)
    ds = get_dataset("chexpert", tmp_path)
    check_contract(ds)
    assert ds.csv["split"].tolist() == ["train", "train", "validate"]
    assert np.isnan(ds.labels[1, 1]) and ds.uncertain[1, 1] and ds.labels[0, 0] == 1
    assert ds[0]["image_path"] == str(tmp_path / "CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg")
    assert len(get_dataset("chexpert", sub, "validate")) == 1    # root may be the CheXpert folder itself
    df.assign(Path=["CheXpert-v1.0/../../x.jpg", "/etc/passwd"]).to_csv(sub / "train.csv", index=False)
    with pytest.raises(InputError) as e: get_dataset("chexpert", tmp_path)
    assert "escapes" in str(e.value) and "train.csv" in str(e.value) and "train.csv line 2:" in str(e.value)


def test_rsna(tmp_path):
    (tmp_path / "stage_2_train_images").mkdir()
    pd.DataFrame([("p1", None, None, None, None, 0), ("p2", 100, 200, 50, 60, 1), ("p2", 300, 200, 10, 10, 1)],
                 columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(tmp_path / "stage_2_train_labels.csv", index=False)
    write_test_dicom(tmp_path / "stage_2_train_images/p2.dcm", (np.arange(64).reshape(8, 8) * 50).astype(np.uint16))
    ds = get_dataset("rsna", tmp_path)
    check_contract(ds)
    assert ds.labels[:, 0].tolist() == [0.0, 1.0] and ds[0]["boxes"] == []
    assert ds[1]["boxes"][0] == dict(label="Pneumonia", x0=100.0, y0=200.0, x1=150.0, y1=260.0)
    assert read_image(ds[1]["image_path"])[1] == (8, 8)


def test_siim_rle_roundtrip_and_masks(tmp_path):
    rng = np.random.default_rng(0)
    m = rng.random((12, 9)) > 0.7
    assert (siim_rle_decode(siim_rle_encode(m), 12, 9) == m).all()
    d = tmp_path / "dicom-images-train/1.2/1.2.3"
    d.mkdir(parents=True)
    write_test_dicom(d / "A.dcm", (np.arange(108).reshape(12, 9) * 10).astype(np.uint16))
    write_test_dicom(d / "B.dcm", (np.arange(108).reshape(12, 9) * 10).astype(np.uint16))
    top, bottom = m.copy(), m.copy()
    top[6:] = False
    bottom[:6] = False
    pd.DataFrame({"ImageId": ["A", "B", "B"], " EncodedPixels": ["-1", " " + siim_rle_encode(top), " " + siim_rle_encode(bottom)]}
                 ).to_csv(tmp_path / "train-rle.csv", index=False)
    ds = get_dataset("siim", tmp_path)
    check_contract(ds)
    assert ds.labels[:, 0].tolist() == [0.0, 1.0] and [ds[i]["has_mask"] for i in range(2)] == [False, True]
    assert ds.load_mask(0) is None and (ds.load_mask(1) == m).all()


def test_covidx(tmp_path):
    (tmp_path / "train.txt").write_text("101 a.png COVID-19 cohen\n102 b.png normal rsna\n103 c.png pneumonia rsna\n")
    (tmp_path / "val.txt").write_text("104 d.png normal rsna\n")
    (tmp_path / "test.txt").write_text("105 e.png COVID-19 sirm\n")
    ds = get_dataset("covidx", tmp_path)
    check_contract(ds)
    assert ds.labels[:, 0].tolist() == [1, 0, 0, 0, 1]
    assert ds.labels[1:3, 1].tolist() == [0, 1] and np.isnan(ds.labels[0, 1])
    assert ds.csv["split"].tolist() == ["train"] * 3 + ["validate", "test"]
    assert ds[3]["image_path"] == str(tmp_path / "val/d.png")
    (tmp_path / "test.txt").write_text("105 e.png\n")
    with pytest.raises(InputError, match="test.txt line 1:"): get_dataset("covidx", tmp_path)


def test_iu_xray_xml(tmp_path):
    x = tmp_path / "ecgen-radiology"
    x.mkdir()
    (x / "1.xml").write_text("""<eCitation><uId id="CXR1"/><MedlineCitation><Article><Abstract>
      <AbstractText Label="FINDINGS">Small left effusion.</AbstractText><AbstractText Label="IMPRESSION">Effusion.</AbstractText>
      </Abstract></Article></MedlineCitation><MeSH><major>Pleural Effusion/left/small</major></MeSH>
      <parentImage id="CXR1_1_IM-0001-3001"/><parentImage id="CXR1_1_IM-0001-4001"/></eCitation>""")
    img(tmp_path / "NLMCXR_png/CXR1_1_IM-0001-3001.png")
    ds = get_dataset("iu_xray", tmp_path)
    check_contract(ds)
    assert len(ds) == 2 and ds.labels[0, ds.pathologies.index("Effusion")] == 1 and ds.labels[0].sum() == 1
    assert "NLMCXR_png" in ds[0]["image_path"] and ds[0]["report"] == "FINDINGS: Small left effusion.\nIMPRESSION: Effusion."
    assert ds.reports()["study_id"].tolist() == ["1"]


def test_tb_kermany_covid_staged_layouts(tmp_path):
    t = tmp_path / "tb"
    img(t / "images/MCUCXR_0001_1.png")
    pd.DataFrame(dict(image_id=["MCUCXR_0001_1"], patient_id=["MCUCXR_0001_1"], image_path=["images/MCUCXR_0001_1.png"],
                      mask_path=[""], view=["PA"], tuberculosis=[1])).to_csv(t / "labels.csv", index=False)
    ds = get_dataset("tb", t)
    check_contract(ds)
    assert ds.labels.tolist() == [[1.0]] and not ds[0]["has_mask"]
    k = tmp_path / "kermany"
    for n, sub in [("person1_virus_6", "pneumonia"), ("IM-0001-0001", "normal")]: img(k / f"images/{sub}/{n}.png")
    pd.DataFrame(dict(image_id=["person1_virus_6", "IM-0001-0001"], patient_id=["P-1", "N-IM-0001"],
                      image_path=["images/pneumonia/person1_virus_6.png", "images/normal/IM-0001-0001.png"],
                      pneumonia=[1, 0], pneumonia_type=["virus", None], orig_split="test")).to_csv(k / "labels.csv", index=False)
    ds = get_dataset("kermany", k, "test")
    check_contract(ds)
    assert ds.labels.tolist() == [[1, 0, 1], [0, 0, 0]]
    c = tmp_path / "covid"
    img(c / "images/a.png")
    img(c / "images/b.png")
    pd.DataFrame(dict(image_id=["a", "b"], patient_id=["1", "2"], image_path=["images/a.png", "images/b.png"], view=["PA", "AP"],
                      finding_labels=["COVID-19|ARDS", "todo"], clinical_notes=["Fever and cough.", ""])).to_csv(c / "labels.csv", index=False)
    pd.DataFrame(dict(image_id=["a"], label=["Left Lung"], x=[1.0], y=[2.0], w=[3.0], h=[4.0])).to_csv(c / "lung_boxes.csv", index=False)
    ds = get_dataset("covid19_ieee8023", c)
    check_contract(ds)
    assert ds.pathologies == ["ARDS", "COVID-19"] and ds.labels[0].tolist() == [1, 1] and np.isnan(ds.labels[1]).all()
    assert ds[0]["report"] == "Fever and cough." and ds[0]["boxes"][0]["x1"] == 4.0
    assert ds.reports()["study_id"].tolist() == ["a"]


def test_staged_escape_and_missing(tmp_path):
    pd.DataFrame(dict(image_id=["x"], patient_id=["x"], image_path=["../x.png"], tuberculosis=[0])).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(InputError, match=r"labels.csv line 2:.*escapes"): get_dataset("tb", tmp_path)
    pd.DataFrame(dict(image_id=["x"], image_path=["x.png"])).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(InputError, match="patient_id"): get_dataset("tb", tmp_path)
    with pytest.raises(InputError, match="not a folder"): get_dataset("tb", tmp_path / "nope")


def test_get_dataset_names_and_splits(tmp_path):
    assert set(DATASETS) == {"mimic", "chestxray14", "chexpert", "rsna", "siim", "covidx", "iu_xray", "tb", "kermany",
                             "covid19_ieee8023", "demo"}
    with pytest.raises(MedklipError, match="unknown dataset"): get_dataset("nih", tmp_path)
    with pytest.raises(MedklipError, match="unknown split"): get_dataset("tb", tmp_path, "holdout")
    assert hash_split("tb", "p1") == hash_split("tb", "p1")
    assert {hash_split("tb", i) for i in range(200)} == {"train", "validate", "test"}


@pytest.mark.parametrize("name,folder,n,p", [("tb", "tb_montgomery_shenzhen", 624, 1), ("kermany", "pediatric_pneumonia_kermany", 450, 3),
                                              ("covid19_ieee8023", "covid_chestxray_ieee8023", 300, None), ("iu_xray", "iu_xray", None, 14)])
def test_real_shared_sets(shared_dir, name, folder, n, p):
    ds = get_dataset(name, shared_dir / "data" / folder)
    check_contract(ds)
    if n: assert len(ds) == n
    if p: assert len(ds.pathologies) == p
    if name != "iu_xray": assert read_image(ds[0]["image_path"])[0].ndim == 2
    if name == "tb":
        i = int(np.flatnonzero(ds.csv["has_mask"])[0])
        assert ds.load_mask(i).shape == read_image(ds[i]["image_path"])[1]


def test_mimic_refuses_paths_outside_root(tmp_path):
    "A dicom_id with '..' or an image symlinked out of the root is refused for mimic and demo alike."
    for name in ("mimic", "demo"):
        root = mimic_tree(tmp_path / name, demo=True)
        meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz")
        spl = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz")
        bad = meta.copy(); bad.loc[0, "dicom_id"] = "../../../outside"
        bad.to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
        spl.loc[0, "dicom_id"] = "../../../outside"; spl.to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
        with pytest.raises(InputError, match="not a plain file name"): get_dataset(name, root)
        meta.to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
        spl = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz"); spl.loc[0, "dicom_id"] = meta.loc[0, "dicom_id"]
        spl.to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
        get_dataset(name, root)   # the clean tree loads
        outside = tmp_path / f"outside_{name}"; outside.mkdir()
        (outside / "x.jpg").write_bytes(b"")
        s = meta.iloc[0]; d = root / f"files/p{str(s.subject_id)[:2]}/p{s.subject_id}/s{s.study_id}"
        (d / f"{s.dicom_id}.jpg").unlink(); (d / f"{s.dicom_id}.jpg").symlink_to(outside / "x.jpg")
        with pytest.raises(InputError, match="escapes"): get_dataset(name, root)


def _link(p, target):
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() or p.is_symlink(): p.unlink()
    p.symlink_to(target)


def _dcm(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    write_test_dicom(p, (np.arange(64).reshape(8, 8) * 50).astype(np.uint16))


def _tree(name, root, first):
    "A two-item tree for loader `name` whose first item is named `first`; returns the first item's image file."
    if name == "chestxray14":
        pd.DataFrame([(first, "Mass", 1, "PA"), ("00000002_000.png", "No Finding", 2, "PA")],
                     columns=["Image Index", "Finding Labels", "Patient ID", "View Position"]).to_csv(root / "Data_Entry_2017.csv", index=False)
        img(root / "images/00000002_000.png"); img(root / "images" / first); return root / "images" / first
    if name == "rsna":
        pd.DataFrame([(first, None, None, None, None, 0), ("p2", None, None, None, None, 0)],
                     columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(root / "stage_2_train_labels.csv", index=False)
        _dcm(root / "stage_2_train_images/p2.dcm"); _dcm(root / f"stage_2_train_images/{first}.dcm"); return root / f"stage_2_train_images/{first}.dcm"
    if name == "siim":
        pd.DataFrame({"ImageId": [first, "B"], "EncodedPixels": ["-1", "-1"]}).to_csv(root / "train-rle.csv", index=False)
        _dcm(root / "dicom-images-train/1/B.dcm"); _dcm(root / f"dicom-images-train/{first}.dcm"); return root / f"dicom-images-train/{first}.dcm"
    if name == "chexpert":
        pd.DataFrame({"Path": [f"CheXpert-v1.0/train/patient00001/study1/{first}", "CheXpert-v1.0/train/patient00002/study1/b.jpg"],
                      "Edema": [1.0, 0.0]}).to_csv((root / "CheXpert-v1.0").mkdir() or root / "CheXpert-v1.0/train.csv", index=False)
        img(root / "CheXpert-v1.0/train/patient00002/study1/b.jpg"); return root / f"CheXpert-v1.0/train/patient00001/study1/{first}"
    if name == "covidx":
        (root / "train.txt").write_text(f"101 {first} COVID-19 cohen\n102 b.png normal rsna\n")
        img(root / "train/b.png"); return root / "train" / first
    if name == "iu_xray":
        pd.DataFrame(dict(study_id=["1", "2"], image_filenames=[first, "b.png"], views=["PA", "PA"], findings=["", ""],
                          impression=["", ""], mesh_major=["", ""])).to_csv(root / "reports.csv", index=False)
        img(root / "images/b.png"); return root / "images" / first
    if name in ("tb", "kermany", "covid19_ieee8023"):
        pd.DataFrame(dict(image_id=["a", "b"], patient_id=["a", "b"], image_path=[f"images/{first}", "images/b.png"],
                          tuberculosis=[0, 1], pneumonia=[0, 1])).to_csv(root / "labels.csv", index=False)
        img(root / "images/b.png"); return root / "images" / first
    if name == "tb_scan":
        img(root / "Shenzhen/CXR_png/CHNCXR_0002_1.png"); return root / "Shenzhen/CXR_png/CHNCXR_0001_0.png"
    if name == "kermany_scan":
        img(root / "chest_xray/train/NORMAL/IM-0002-0001.jpeg"); return root / "chest_xray/train/PNEUMONIA/person1_virus_6.jpeg"


LOADERS = ["chestxray14", "rsna", "siim", "chexpert", "covidx", "iu_xray", "tb", "kermany", "covid19_ieee8023"]
OUTSIDE = "escapes the dataset root|outside the dataset root"


@pytest.mark.parametrize("name", LOADERS + ["tb_scan", "kermany_scan"])
def test_every_loader_refuses_paths_outside_root(tmp_path, name):
    "A traversal row and a symlink to a file outside the root are refused (one line naming the item), for every loader and layout."
    loader, ext = name.split("_scan")[0], {"rsna": ".dcm", "siim": ".dcm", "kermany_scan": ".jpeg"}.get(name, ".png")
    (tmp_path / "outside").mkdir()
    target = tmp_path / "outside" / f"x{ext}"
    _dcm(target) if ext == ".dcm" else img(target)
    ok = tmp_path / "ok"; ok.mkdir()
    first = _tree(name, ok, f"a{ext}" if ext != ".dcm" else "a")
    if not first.exists(): img(first)
    check_contract(get_dataset(loader, ok))   # the clean tree loads
    link = tmp_path / "link"; link.mkdir()
    _link(_tree(name, link, f"a{ext}" if ext != ".dcm" else "a"), target)
    with pytest.raises(InputError, match=OUTSIDE) as e: get_dataset(loader, link)
    assert "\n" not in str(e.value) and str(link) in str(e.value)
    if name.endswith("_scan"): return
    trav = tmp_path / "trav"; trav.mkdir()
    _tree(name, trav, "../" * 8 + (f"outside/x{ext}" if ext != ".dcm" else "outside/x"))
    with pytest.raises(InputError, match=OUTSIDE): get_dataset(loader, trav)


def test_masks_outside_root_are_refused(tmp_path):
    "A mask file that is a symlink out of the root is refused when read, for the demo, tb and covid19_ieee8023 loaders."
    (tmp_path / "outside").mkdir(); m = np.zeros((20, 16), np.uint8); m[2:5, 2:5] = 255
    Image.fromarray(m).save(tmp_path / "outside/m.png")
    root = mimic_tree(tmp_path / "demo", demo=True)
    _link(root / "demo/masks/d0_0__effusion.png", tmp_path / "outside/m.png")
    ds = get_dataset("demo", root); i = int(np.flatnonzero(ds.csv["image_id"] == "d0_0")[0])
    with pytest.raises(InputError, match="mask resolves to .*outside the dataset root"): ds.load_mask(i)
    t = tmp_path / "tb"; img(t / "images/a.png")
    _link(t / "masks/a.png", tmp_path / "outside/m.png")
    pd.DataFrame(dict(image_id=["a"], patient_id=["a"], image_path=["images/a.png"], mask_path=["masks/a.png"], tuberculosis=[1])).to_csv(t / "labels.csv", index=False)
    with pytest.raises(InputError, match="escapes the dataset root|outside the dataset root"): get_dataset("tb", t).load_mask(0)
    c = tmp_path / "covid"; img(c / "images/a.png")
    pd.DataFrame(dict(image_id=["a"], patient_id=["1"], image_path=["images/a.png"], finding_labels=["COVID-19"])).to_csv(c / "labels.csv", index=False)
    _link(c / "masks/a.png", tmp_path / "outside/m.png")
    pd.DataFrame(dict(image_id=["a"], mask_path=["masks/a.png"])).to_csv(c / "lung_masks.csv", index=False)
    with pytest.raises(InputError, match="escapes the dataset root|outside the dataset root"): get_dataset("covid19_ieee8023", c).load_mask(0)


def test_symlinked_root_is_fine_symlinked_subfolder_is_not(tmp_path):
    "A root that is itself a symlink (data on another disk) loads; a folder inside it linked to elsewhere is refused."
    (tmp_path / "real").mkdir()
    _tree("chestxray14", tmp_path / "real", "00000001_000.png")
    (tmp_path / "root").symlink_to(tmp_path / "real")
    assert len(get_dataset("chestxray14", tmp_path / "root")) == 2
    (tmp_path / "real/images").rename(tmp_path / "elsewhere")
    (tmp_path / "real/images").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="outside the dataset root"): get_dataset("chestxray14", tmp_path / "root")
