"dvc.yaml, params.yaml, the README and the CLI agree: every stage command parses with the CLI it calls."
import argparse, itertools, re, shlex
from pathlib import Path
import pytest, yaml
from medklip.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / 'params.yaml').read_text())
DVC = yaml.safe_load((REPO / 'dvc.yaml').read_text())


def _lookup(expr, scope):
    cur = scope
    for part in expr.split('.'): cur = cur[part]
    return cur


def _render(text, scope):
    return re.sub(r'\$\{([^}]+)\}', lambda m: str(_lookup(m.group(1).strip(), scope)), text)


def _cmds(cmd):
    "A stage's commands: DVC takes one string or a list of them."
    return cmd if isinstance(cmd, list) else [cmd]


def _stage_commands():
    for name, st in DVC['stages'].items():
        if 'matrix' in st:
            axes = {k: _lookup(v[2:-1], PARAMS) if isinstance(v, str) else v for k, v in st['matrix'].items()}
            for combo in itertools.product(*axes.values()):
                item = dict(zip(axes, combo))
                for k, c in enumerate(_cmds(st['cmd'])): yield f"{name}@{'-'.join(map(str, combo))}#{k}", _render(c, {**PARAMS, 'item': item})
        elif 'foreach' in st:
            items = _lookup(st['foreach'][2:-1], PARAMS)
            for key, item in items.items():
                for k, c in enumerate(_cmds(st['do']['cmd'])): yield f"{name}@{key}#{k}", _render(c, {**PARAMS, 'key': key, 'item': item})
        else:
            for k, c in enumerate(_cmds(st['cmd'])): yield f"{name}#{k}", _render(c, PARAMS)


class _Parsed(Exception): pass


@pytest.mark.parametrize('stage,cmd', list(_stage_commands()))
def test_stage_command_parses(stage, cmd, monkeypatch):
    argv = shlex.split(cmd)
    assert argv[0] == 'medklip' and argv[1] in COMMANDS, f"{stage}: unknown subcommand in {cmd!r}"
    orig = argparse.ArgumentParser.parse_args
    def parse_then_stop(self, args=None, namespace=None):
        ns = orig(self, args, namespace)  # exits with status 2 on an unknown or missing flag
        raise _Parsed(ns)
    monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', parse_then_stop)
    with pytest.raises(_Parsed): main(argv[1:])


def test_stage_params_exist():
    for name, st in DVC['stages'].items():
        body = st.get('do', st)
        for p in body.get('params', []):
            key = p if isinstance(p, str) else next(iter(p))
            _lookup(key, PARAMS)  # KeyError names a param a stage lists but params.yaml lacks


def test_readme_opens_with_the_two_commands():
    text = (REPO / 'README.md').read_text()
    block = text[text.index('```bash'):text.index('```', text.index('```bash') + 3)]
    assert 'make repro' in block and 'make test' in block
    assert 'make test' in (REPO / '.ci' / 'run').read_text()
