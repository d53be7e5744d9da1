"bench/ablations.py: arms switch the four methods, and the pooled paired difference resamples images within each run."
import importlib.util, json
from pathlib import Path
import numpy as np, pandas as pd, pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def ab():
    spec = importlib.util.spec_from_file_location('ablations', ROOT/'bench'/'ablations.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


def test_arms(ab):
    assert ab.ARMS == ('plain', 'gkmvlp', 'medfilip', 'aspects', 'all')
    assert ab.arm_weights('plain') == dict(gkmvlp_weight=0., gkmvlp_attn_weight=0., medfilip_weight=0., aspect_weight=0.)
    assert ab.arm_weights('aspects', asp=2.)['aspect_weight'] == 2. and ab.arm_weights('aspects')['medfilip_weight'] == 0.
    assert all(v > 0 for v in ab.arm_weights('all').values())
    from medklip.losses import METHOD_WEIGHTS
    assert set(ab.METHOD_KEYS) == set(METHOD_WEIGHTS)          # every method switch is an arm's


def _run(d, seed, shift):
    "A fake run: two unseen findings, the aspects prompt better than the name by `shift`."
    rng = np.random.default_rng(seed); d.mkdir(parents=True)
    n = 80; df = {}
    for f in ('u1', 'u2'):
        y = (rng.random(n) < 0.4).astype(float); df[f'label:{f}'] = y
        df[f'score:{f}:name'] = rng.random(n) + 0.2 * y
        df[f'score:{f}:description'] = rng.random(n) + 0.2 * y
        df[f'score:{f}:aspects'] = rng.random(n) + (0.2 + shift) * y
    pd.DataFrame(df).to_csv(d/'scores.csv', index=False)
    return dict(dir=str(d), arm='aspects', unseen={'u1': {}, 'u2': {}})


def test_pooled_difference(ab, tmp_path):
    runs = [_run(tmp_path/f'r{i}', i, 1.5) for i in range(3)]
    p = ab.pooled_difference(runs, 'aspects', n_boot=200)
    assert p['n_runs'] == 3 and p['n_pairs'] == 6 and p['value'] > 0.2 and p['ci'][0] > 0 and p['ci'][0] < p['value'] < p['ci'][1]
    q = ab.pooled_difference(runs, 'description', n_boot=200)
    assert q['ci'][0] < 0 < q['ci'][1]                           # no real difference: the interval covers 0
    from medklip.eval.metrics import weighted_auroc
    df = pd.read_csv(tmp_path/'r0'/'scores.csv')
    one = weighted_auroc(df['score:u1:aspects'].to_numpy(), df['label:u1'].to_numpy())[0] - weighted_auroc(df['score:u1:name'].to_numpy(), df['label:u1'].to_numpy())[0]
    auc = weighted_auroc(df['score:u1:aspects'].to_numpy(), df['label:u1'].to_numpy())[0]
    assert ab.pooled_difference([dict(runs[0], unseen={'u1': {}})], 'aspects', n_boot=0) == dict(
        value=pytest.approx(one), ci=None, n_runs=1, n_pairs=1, auroc=pytest.approx(auc), auroc_ci=None, run_ci=None)
    assert p['auroc_ci'][0] > 0.5 and p['run_ci'][0] > 0                     # the prompt itself is above chance; so is each run
    txt, res = ab.pooled_table(runs, 50)
    assert '| aspects | aspects | 3 | 6 |' in txt and res['aspects']['aspects']['ci'][0] > 0
    assert txt.splitlines()[-1].endswith('| yes; yes |') and txt.splitlines()[-2].endswith('| no |')   # aspects met, description not


def test_aspect_aurocs(ab):
    "An aspect detector that fires on its seen carriers but not on the unseen finding: high seen AUROC, chance unseen AUROC."
    rng = np.random.default_rng(0); n = 400
    lab = pd.DataFrame({f: (rng.random(n) < 0.2).astype(int) for f in ('s1', 's2', 'u')})
    asp = {'s1': ('density: lucency', 'place: apex'), 's2': ('density: lucency',), 'u': ('density: lucency', 'place: below')}
    names = ['density: lucency', 'place: apex', 'place: below']
    carried = lambda a: lab[[f for f in asp if a in asp[f]]].to_numpy().max(1)
    S = np.stack([rng.random(n) + 2 * ((lab.s1 + lab.s2) > 0), rng.random(n), rng.random(n) + 2 * lab.u], 1)
    rows = {r['aspect']: r for r in ab.aspect_aurocs(lab, S, names, asp, ['s1', 's2'], ['u'])}
    assert set(rows) == {'density: lucency', 'place: below'} and rows['density: lucency']['carriers'] == ['s1', 's2']
    lu = rows['density: lucency']
    assert lu['seen_auroc'] > 0.95 and 0.35 < lu['unseen_auroc'] < 0.65          # learned the carriers, not the attribute
    assert lu['n_unseen'] == int(((lab.u == 1) & (lab.s1 + lab.s2 == 0)).sum()) and lu['n_seen'] == int(((carried('density: lucency') == 1) & (lab.u == 0)).sum())
    below = rows['place: below']                                                   # no seen carrier: seen AUROC undefined
    assert below['carriers'] == [] and below['n_seen'] == 0 and np.isnan(below['seen_auroc']) and below['unseen_auroc'] > 0.95
