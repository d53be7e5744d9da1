"Shared fixtures: offline hub, the optional ../shared data folder, tiny temporary trees."
import os
from pathlib import Path
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# pytest-xdist workers share the cores: one torch/OpenMP thread each (torch reads this when first imported, after this)
if os.environ.get('PYTEST_XDIST_WORKER'): os.environ.setdefault('OMP_NUM_THREADS', '1')

REPO = Path(__file__).resolve().parents[1]

# The heaviest test files, heaviest first (pytest --durations on 2 cores, 2026-12-05): `make test` starts them at once
# (pytest-xdist --dist loadfile --no-loadscope-reorder hands out files in this order), so no worker ends alone on a long one
HEAVY_FIRST = ('test_dvc.py', 'test_tutorial.py', 'test_figures.py', 'test_light_install.py', 'test_train.py', 'test_ddp.py',
               'test_gpu_paths.py', 'test_viz.py')


def pytest_collection_modifyitems(config, items):
    rank = {n: i for i, n in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda it: rank.get(it.path.name, len(rank)))   # stable: every other file keeps its place
SHARED = Path(os.environ.get("MEDKLIP_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    "The ../shared folder (real public data and scorers); tests that need it skip cleanly where a clone has none."
    if not SHARED.is_dir(): pytest.skip(f"{SHARED} not present (only developer machines and CI have ../shared)")
    return SHARED
