"The DVC experiment loop tells the truth: stage deps cover the code, and the README's `dvc exp run` variants train what they say."
import json, os, re, shutil, subprocess, sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import stage_deps  # noqa: E402


def test_every_stage_depends_on_the_code_it_runs():
    assert stage_deps.missing() == {}, "run `python tools/stage_deps.py --write`"


def test_closure_follows_lazy_and_relative_imports(tmp_path):
    files = stage_deps.closure(['medklip.train'])
    assert {'medklip/train.py', 'medklip/checkpoint.py', 'medklip/losses.py', 'medklip/model.py'} <= files
    assert 'medklip/methods/gkmvlp.py' in files and 'medklip/methods/medfilip.py' in files   # loaded by name at run time
    assert 'medklip/cli.py' not in files


def readme_exp_commands() -> list[str]:
    "Every `dvc exp run ...` line of the README's code blocks, verbatim."
    text = (ROOT/'README.md').read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S)
    cmds = [l.split('#')[0].strip() for b in blocks for l in b.splitlines() if l.strip().startswith('dvc exp run')]
    return cmds


def _overrides(cmd:str) -> dict:
    "The `-S key=value` settings of a command, values read as YAML (as DVC does)."
    out = {}
    for m in re.finditer(r"-S\s+'?([\w.]+)=([^'\s]+)'?", cmd): out[m.group(1)] = yaml.safe_load(m.group(2))
    return out


def test_readme_documents_the_variants():
    cmds = readme_exp_commands()
    assert len(cmds) >= 4, cmds
    seen = [_overrides(c) for c in cmds]
    assert any(s.get('pretrain.gkmvlp_weight') == 0 and s.get('pretrain.medfilip_weight', 0) == 0 for s in seen)   # plain MedKLIP
    assert any(s.get('pretrain.medfilip_weight', 0) > 0 for s in seen)
    assert any(s.get('pretrain.aspect_weight', 0) > 0 for s in seen)                                                 # aspect queries


def _sh(cmd, cwd, env, timeout=600):
    r = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    "A git + DVC copy of this project with a tiny demo corpus, a tiny model and a 1-epoch default, its `pretrain` stage run once."
    if not shutil.which('git'): pytest.skip('git is not installed')
    d = tmp_path_factory.mktemp('proj')
    for f in ('dvc.yaml', 'params.yaml', '.gitignore', '.dvcignore'):
        if (ROOT/f).exists(): shutil.copy(ROOT/f, d/f)
    shutil.copytree(ROOT/'medklip', d/'medklip', ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copytree(ROOT/'nbs'/'figures', d/'nbs'/'figures')
    (d/'.dvc').mkdir(); (d/'.dvc'/'config').write_text('[core]\n    analytics = false\n    autostage = true\n')
    p = yaml.safe_load((d/'params.yaml').read_text())
    p['demo_data'].update(n_patients=24)
    p['pretrain'].update(epochs=1, batch_size=16, threads=1, image_size=64, d_model=32, layers=1, heads=2, ffn=64)   # a tiny model:
    p['prepare'].update(size=64)                                      # what is checked is which settings each variant trains with
    (d/'params.yaml').write_text(yaml.safe_dump(p, sort_keys=False))
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'DVC_NO_ANALYTICS': '1',
           'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@t', 'GIT_COMMITTER_NAME': 't', 'GIT_COMMITTER_EMAIL': 't@t',
           'PATH': f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    _sh('git init -q && git add -A && git commit -qm init', d, env)
    _sh(f'{sys.executable} -m medklip.cli demo-data --config params.yaml', d, env)
    _sh('dvc repro -q pretrain && git add -A && git commit -qm baseline', d, env, timeout=900)
    return d, env


def _model(d:Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file
    return json.loads((d/'work'/'model'/'meta.json').read_text()), load_file(str(d/'work'/'model'/'model.safetensors'))


def test_readme_variants_train_what_their_parameters_say(project):
    d, env = project
    base_meta, base_w = _model(d)
    assert base_meta['trained']['epochs'] == 1
    for cmd in readme_exp_commands():
        _sh('git checkout -q params.yaml dvc.lock', d, env)               # each variant from the committed parameters
        over = _overrides(cmd)
        out = _sh(f"{cmd} pretrain", d, env, timeout=900)                 # verbatim, only up to the pretrain stage
        meta, w = _model(d)
        params = yaml.safe_load((d/'params.yaml').read_text())['pretrain']
        for k, v in over.items():                                         # the workspace params and the model agree
            sec, key = k.split('.', 1)
            if sec != 'pretrain': continue
            assert params[key] == v and meta['settings'][key] == v, (cmd, key, meta['settings'].get(key))
        assert meta['trained']['epochs'] == params['epochs'], cmd
        on = {n for n, wgt in meta['methods'].items() if wgt > 0}
        want = {n for k, n in (('gkmvlp_weight', 'gkmvlp'), ('gkmvlp_attn_weight', 'gkmvlp_attn'), ('medfilip_weight', 'medfilip'),
                               ('aspect_weight', 'aspects')) if float(params.get(k, 0)) > 0}
        assert on == want, (cmd, meta['methods'])
        changed = {k for k, v in over.items() if k.startswith('pretrain.') and base_meta['settings'].get(k.split('.', 1)[1]) != v}
        if changed:                                                       # a different run, never the baseline model re-saved
            assert 'starting a fresh run' in out or 'no checkpoint' in out or 'Running stage' in out
            assert any(not (w[k] == base_w[k]).all() for k in base_w if k.startswith('model.')), cmd


@pytest.mark.parametrize("lower,upper", [("medklip.text.parse", "medklip/text/backends.py"),
                                         ("medklip.eval.infer", "medklip/viz/overlay.py"),
                                         ("medklip.eval.infer", "medklip/viz/__init__.py")])
def test_imports_run_one_way(lower, upper):
    "The rule parser never imports the backends built on it; evaluation never reaches up into visualisation (lazy imports count)."
    assert upper not in stage_deps.closure([lower])
