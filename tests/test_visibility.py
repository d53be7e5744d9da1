"bench/visibility.py: the probe finds a finding that is in the features, not one that is not, and the verdict uses the seen findings' quantile."
import sys
from pathlib import Path
import numpy as np, pytest

sys.path.append(str(Path(__file__).resolve().parents[1]/'bench'))   # appended: bench/io.py must not shadow the standard io


@pytest.fixture(scope='module')
def vis():
    import visibility
    return visibility


def test_probe_finds_signal_not_noise(vis):
    rng = np.random.default_rng(0)
    y = rng.random(300) < .2
    F = rng.standard_normal((300, 50))
    assert abs(vis.probe_auroc(F, y) - .5) < .12                 # labels unrelated to the features
    F[:, 7] += 3.0*y                                            # one feature carries the finding
    assert vis.probe_auroc(F, y) > .85


def test_verdicts_against_the_seen_quantile(vis):
    rows = [dict(finding=f's{i}', unseen=False, trunk=v) for i, v in enumerate(np.linspace(.6, 1., 11))]
    rows += [dict(finding='u_low', unseen=True, trunk=.62), dict(finding='u_ok', unseen=True, trunk=.9)]
    bar, un = vis.verdicts(rows, .1)
    assert bar == pytest.approx(.64)
    assert {r['finding']: r['visible'] for r in un} == {'u_low': False, 'u_ok': True}


def test_pixel_features_shape(vis):
    X = np.random.default_rng(0).integers(0, 255, (3, 64, 48), dtype=np.uint8)
    assert vis.pixel_features(X, 16).shape == (3, 256)
