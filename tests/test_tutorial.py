"The tutorial the `tutorial` stage executes: it refuses to stand in when the stage asks for real results, and an executed copy is byte-reproducible."
from pathlib import Path

import pytest

from medklip.core import MedklipError
from medklip.viz.figures import figures_cli

ROOT = Path(__file__).resolve().parents[1]


def _run(out:Path, *sets:str) -> int:
    args = ['--params', '', '--notebooks', str(ROOT/'nbs'), '--only', 'tutorial_zeroshot', '--out', str(out)]
    for s in sets: args += ['--set', s]
    return figures_cli(args)


def test_stage_mode_refuses_missing_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MedklipError, match=r"failed in cell .*missing pipeline outputs .*checkpoint.*run `dvc repro`"):
        _run(tmp_path/'r', f'checkpoint={tmp_path}/no_model', 'require_results=true')


def test_stand_in_run_is_byte_reproducible(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for k in (1, 2): assert _run(Path(f'r{k}'), 'checkpoint=no_model', 'triplets=no.jsonl') == 0
    nb1, nb2 = (Path(f'r{k}')/'tutorial_zeroshot.ipynb' for k in (1, 2))
    text = nb1.read_text()
    assert 'MEANINGLESS' in text and 'image/png' in text and str(tmp_path) not in text   # outputs kept, no absolute paths
    assert nb1.read_bytes() == nb2.read_bytes().replace(b'out_dir = \\"r2\\"', b'out_dir = \\"r1\\"')   # only the injected out_dir differs
    assert (Path('r1')/'tutorial_zeroshot.html').read_bytes() == (Path('r2')/'tutorial_zeroshot.html').read_bytes()
