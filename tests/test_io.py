"read_image: formats, normalisation, DICOM transforms and the documented error for every kind of bad file."
import numpy as np
import pytest
from PIL import Image

from medklip.core import InputError
from medklip.data.io import ImageReadError, read_image, scan_images, write_test_dicom

RAMP = (np.arange(24 * 32).reshape(24, 32) % 200 + 20).astype(np.uint16)


def test_png8_gray_and_rgb(tmp_path):
    g = RAMP.astype(np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "c.png")
    a, hw = read_image(tmp_path / "g.png")
    assert a.dtype == np.float32 and hw == (24, 32)
    np.testing.assert_allclose(a, g / 255, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "c.png")[0], a, atol=1 / 255)


def test_png16_minmax(tmp_path):
    v = (RAMP * 40).astype(np.uint16)
    Image.fromarray(v).save(tmp_path / "v.png")
    a, _ = read_image(tmp_path / "v.png")
    assert a.min() == 0 and a.max() == 1
    np.testing.assert_allclose(a, (v - v.min()) / (v.max() - v.min()), atol=1e-6)


def test_jpeg_rgb(tmp_path):
    Image.fromarray(np.stack([RAMP.astype(np.uint8)] * 3, -1)).save(tmp_path / "x.jpg", quality=98)
    a, hw = read_image(tmp_path / "x.jpg")
    assert hw == (24, 32) and abs(float(a.mean()) - RAMP.mean() / 255) < 0.01


def test_dicom_monochrome1_inverted(tmp_path):
    m2 = read_image(write_test_dicom(tmp_path / "a.dcm", RAMP))[0]
    m1 = read_image(write_test_dicom(tmp_path / "b.dcm", RAMP, photometric="MONOCHROME1"))[0]
    np.testing.assert_allclose(m1, 1 - m2, atol=1e-6)
    assert m2[0, 0] == 0 and m1[0, 0] == 1   # the lowest stored value is black in MONOCHROME2, white in MONOCHROME1


def test_dicom_slope_intercept_and_window(tmp_path):
    # value v -> 3v - 500; window centred at 3*120-500 = -140, width 301 -> v=120 is mid grey
    a, _ = read_image(write_test_dicom(tmp_path / "w.dcm", RAMP, slope=3.0, intercept=-500.0, window=(-140, 301)))
    assert abs(float(a[RAMP == 120].mean()) - 0.5) < 0.01
    assert (a[RAMP < 60] == 0).all() and (a[RAMP > 180] == 1).all()


def test_dicom_without_window_is_minmax(tmp_path):
    a, _ = read_image(write_test_dicom(tmp_path / "s.dcm", RAMP, slope=2.0, intercept=-1024.0))
    np.testing.assert_allclose(a, (RAMP - RAMP.min()) / (RAMP.max() - RAMP.min()), atol=1e-6)


def test_dicom_compressed_if_decoder(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.uid import RLELossless
    p = write_test_dicom(tmp_path / "c.dcm", RAMP)
    ds = pydicom.dcmread(p)
    try: ds.compress(RLELossless)
    except Exception as e: pytest.skip(f"no RLE encoder: {e}")
    ds.save_as(tmp_path / "rle.dcm")
    np.testing.assert_allclose(read_image(tmp_path / "rle.dcm")[0], read_image(p)[0])


@pytest.mark.parametrize("name,make,why", [
    ("empty.png", lambda p: p.write_bytes(b""), "empty"),
    ("notes.txt", lambda p: p.write_text("hello"), "unsupported"),
    ("flat.png", lambda p: Image.fromarray(np.full((9, 9), 3, np.uint8)).save(p), "zero-variance"),
    ("garbage.dcm", lambda p: p.write_bytes(b"\0" * 128 + b"DICM" + b"\x01" * 50), "DICOM"),
    ("garbage.png", lambda p: p.write_bytes(b"\x89PNG not really"), "cannot decode"),
])
def test_bad_files_raise_image_read_error(tmp_path, name, make, why):
    p = tmp_path / name
    make(p)
    with pytest.raises(ImageReadError) as e: read_image(p)
    assert why in str(e.value) and name in str(e.value)
    assert isinstance(e.value, InputError) and e.value.path == p


def test_truncated_jpeg(tmp_path):
    Image.fromarray(RAMP.astype(np.uint8)).resize((256, 256)).save(tmp_path / "full.jpg")
    b = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(b[: len(b) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"): read_image(tmp_path / "cut.jpg")


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="not found"): read_image(tmp_path / "nope.png")


def test_scan_images_lists_bad(tmp_path):
    Image.fromarray(RAMP.astype(np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"")
    bad = scan_images([tmp_path / "ok.png", tmp_path / "bad.png"])
    assert [b["path"] for b in bad] == [str(tmp_path / "bad.png")] and "empty" in bad[0]["reason"]


def test_real_pngs(shared_dir):
    imgs = sorted((shared_dir / "data/tb_montgomery_shenzhen/images").glob("*.png"))[:3]
    if not imgs: pytest.skip("no TB images")
    for p in imgs:
        a, hw = read_image(p)
        assert hw == (512, 512) and 0 <= a.min() < a.max() <= 1


def test_jpeg_draft_decode_matches_full_decode(tmp_path):
    "Reduced-scale JPEG decode (Image.draft) + resize vs full decode + resize: within 1 grey level on average, 4 at most."
    from medklip.data.store import resize_uint8
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:1536, :1280].astype(np.float32)
    img = 128 + 60 * np.sin(xx / 150.) * np.cos(yy / 110.) + 25 * np.sin(xx / 13. + yy / 17.) + rng.normal(0, 6, xx.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp_path / "big.jpg", quality=92)
    full, hw = read_image(tmp_path / "big.jpg")
    small, hw2 = read_image(tmp_path / "big.jpg", min_size=256)
    assert hw == hw2 == (1536, 1280) and full.shape == (1536, 1280)
    assert small.shape == (384, 320)            # the 1/4 scale: the smallest whose sides stay >= 256
    d = np.abs(resize_uint8(full, 256).astype(float) - resize_uint8(small, 256).astype(float))
    assert d.mean() <= 1.0 and d.max() <= 4, (d.mean(), d.max())
    assert read_image(tmp_path / "big.jpg", min_size=1000)[0].shape == (1536, 1280)   # no scale keeps both sides >= 1000


def test_directory_is_named(tmp_path):
    with pytest.raises(ImageReadError, match="is a directory"): read_image(tmp_path)


def test_alpha_is_ignored_not_composited(tmp_path):
    "An X-ray saved with partial alpha reads as its colour channels: not darkened (over black) nor lightened (over white)."
    g = (np.arange(20 * 30).reshape(20, 30) % 200 + 40).astype(np.uint8)
    a = np.full_like(g, 128); a[:, :10] = 0; a[:, 20:] = 255
    ref = read_image(_save(tmp_path / "l.png", Image.fromarray(g)))[0]
    for mode, arr in (("RGBA", np.dstack([g, g, g, a])), ("LA", np.dstack([g, a]))):
        out, hw = read_image(_save(tmp_path / f"{mode}.png", Image.fromarray(arr, mode)))
        assert hw == (20, 30) and np.array_equal(out, ref), mode
    p = Image.fromarray(g).convert("P"); p.info["transparency"] = int(np.asarray(p)[0, 0])
    assert np.array_equal(read_image(_save(tmp_path / "p.png", p, transparency=p.info["transparency"]))[0], ref)


def _save(path, im, **kw):
    im.save(path, **kw); return path
