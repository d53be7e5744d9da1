"Classification metrics against scikit-learn, validation thresholds, bootstrap intervals."
import numpy as np, pytest
from sklearn.metrics import roc_auc_score, f1_score, matthews_corrcoef, accuracy_score
from medklip.eval.metrics import evaluate_classification, max_f1_threshold, weighted_auroc, weighted_threshold_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300); s = np.round(rng.random(300) + 0.4 * y, 2)
    assert weighted_auroc(s, y)[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    t = float(np.median(s)); p = (s >= t).astype(int); m = weighted_threshold_metrics(s, y, t)
    assert m['f1'][0] == pytest.approx(f1_score(y, p)); assert m['mcc'][0] == pytest.approx(matthews_corrcoef(y, p))
    assert m['accuracy'][0] == pytest.approx(accuracy_score(y, p))


def test_val_threshold_applied_to_test():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, (500, 1)).astype(float); s = rng.random((500, 1)) + 0.5 * y
    vy = rng.integers(0, 2, (300, 1)).astype(float); vs = rng.random((300, 1)) + 0.9 * vy + 0.3
    r = evaluate_classification(s, y, ['x'], vs, vy, n_boot=100)['classes']['x']
    tv, to = r['val_threshold']['value'], r['oracle_threshold']['value']
    assert tv == max_f1_threshold(vs[:, 0], vy[:, 0])[0] and to == max_f1_threshold(s[:, 0], y[:, 0])[0] and tv != to
    assert r['at_val_threshold']['f1']['value'] == pytest.approx(f1_score(y[:, 0], (s[:, 0] >= tv).astype(int)))
    assert 'oracle' in r['oracle_threshold']['note'] or 'test split itself' in r['oracle_threshold']['note']


def test_bootstrap_seeded_and_contains_point():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, (200, 2)).astype(float); s = rng.random((200, 2)) + 0.3 * y
    a = evaluate_classification(s, y, ['a', 'b'], n_boot=300, seed=11)
    assert a == evaluate_classification(s, y, ['a', 'b'], n_boot=300, seed=11)
    assert a != evaluate_classification(s, y, ['a', 'b'], n_boot=300, seed=12)
    for c in ('a', 'b'):
        lo, hi = a['classes'][c]['auroc']['ci']; assert lo <= a['classes'][c]['auroc']['value'] <= hi
    lo, hi = a['macro']['auroc']['ci']; assert lo < a['macro']['auroc']['value'] < hi


def test_nan_and_single_class():
    y = np.array([[1, 0], [0, 0], [np.nan, 0], [1, 0]], float); s = np.array([[.9, .1], [.2, .2], [.5, .3], [.8, .4]])
    r = evaluate_classification(s, y, ['a', 'b'], n_boot=20)
    assert r['classes']['a']['n'] == 3 and r['classes']['a']['auroc']['value'] == 1.0
    assert r['classes']['b']['auroc'] is None and 'only one label value' in r['classes']['b']['auroc_reason']
    assert r['macro']['auroc']['n_classes'] == 1
