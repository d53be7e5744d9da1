"bench/pipeline.py: the steps `make repro` runs, and each `dvc repro` stage timed from its 'Running stage' line to the next."
import importlib.util, json, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location('pipeline_bench', ROOT/'bench'/'pipeline.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


FAKE_DVC = """import sys, time
if sys.argv[1] != 'repro': sys.exit(0)
print("Running stage 'prepare':\\n> medklip prepare", flush=True); time.sleep(0.3)
print("Updating lock file 'dvc.lock'", flush=True)
print("Stage 'parse_reports' didn't change, skipping", flush=True)
print("Stage 'embed' is cached - skipping run, checking out outputs", flush=True); time.sleep(0.1)
print("Running stage 'finetune@pretrained-10':", flush=True); time.sleep(0.6)
sys.exit(3 if '--fail' in sys.argv else 0)
"""


@pytest.fixture
def fake_dvc(tmp_path):
    f = tmp_path/'dvc'; f.write_text(f"#!{sys.executable}\n{FAKE_DVC}"); f.chmod(0o755)
    return f


def test_stage_seconds_from_dvc_output(fake_dvc, tmp_path, capsys):
    out = tmp_path/'t.json'
    assert _bench().main(['--no-data', '--dvc', str(fake_dvc), '--cwd', str(tmp_path), '--json', str(out)]) == 0
    rows = {r['step']: r for r in json.loads(out.read_text())['rows']}
    assert list(rows) == ['prepare', 'parse_reports', 'embed', 'finetune@pretrained-10', 'dvc repro (outside stages)']
    assert rows['embed']['cached'] and 0.05 <= rows['embed']['seconds'] < 0.5
    assert 0.25 <= rows['prepare']['seconds'] < 0.6 and rows['parse_reports'] == dict(step='parse_reports', seconds=0.0, skipped=True)
    assert 0.55 <= rows['finetune@pretrained-10']['seconds'] < 1.2
    table = capsys.readouterr().out
    assert 'prepare' in table and '(skipped: unchanged)' in table and table.strip().splitlines()[-1].startswith('total')


def test_failing_stage_names_it(fake_dvc, tmp_path):
    with pytest.raises(SystemExit, match=r"failed \(exit 3\) in stage finetune@pretrained-10"):
        _bench().main(['--no-data', '--dvc', str(fake_dvc), '--cwd', str(tmp_path), '--stages=--fail'])


def test_dry_run_lists_what_make_repro_runs(capsys):
    assert _bench().main(['--dry-run', '--setup', '--force', '--stages', 'pretrain']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [l.split(':')[0] for l in lines] == ['setup', 'demo-data', 'dvc add data', 'dvc repro']
    assert lines[0].endswith('make setup') and lines[-1].endswith('repro --force pretrain') and 'demo-data --config params.yaml' in lines[1]
