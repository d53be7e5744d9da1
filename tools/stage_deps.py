"""Which package files each DVC stage runs: the static import closure of the module its `medklip <command>` calls,
and the package data files (`medklip/resources/`) that code names.

`python tools/stage_deps.py` prints, per stage of dvc.yaml, the code files it runs that are missing from its deps
(`tests/test_dvc.py` fails on any); `--write` rewrites the code deps of dvc.yaml to exactly those files. Imports inside functions count (they run when the stage does); the dispatcher
`medklip/cli.py` and the package's `__init__.py`/`_modidx.py` are left out: they map a command name to a function
and compute nothing a stage writes.
"""
from __future__ import annotations
import ast, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT/'medklip'
IGNORED = {'medklip/cli.py', 'medklip/__init__.py', 'medklip/_modidx.py'}


def module_file(mod:str) -> Path|None:
    "The source file of a `medklip.…` module (package `__init__` for a package), or None."
    parts = mod.split('.')
    if parts[0] != 'medklip': return None
    p = ROOT.joinpath(*parts)
    if p.with_suffix('.py').exists(): return p.with_suffix('.py')
    if (p/'__init__.py').exists(): return p/'__init__.py'
    return None


def imports_of(src:str, mod:str, is_pkg:bool=False) -> set[str]:
    "Every `medklip` module a source imports, anywhere in it (relative imports resolved against `mod`)."
    out, pkg = set(), mod.split('.') if is_pkg else mod.split('.')[:-1]
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split('.')[0] == 'medklip'}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level: base = '.'.join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
            if base.split('.')[0] != 'medklip': continue
            out.add(base)
            out |= {f'{base}.{a.name}' for a in node.names if module_file(f'{base}.{a.name}')}  # `from medklip.eval import zeroshot`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r'medklip(\.\w+)+', node.value):
            out.add(node.value)      # importlib.import_module('medklip.methods.x') and 'medklip.x:fn' targets
        elif isinstance(node, ast.JoinedStr):   # f'medklip.methods.{base}': every module of that package may run
            lead = node.values[0].value if node.values and isinstance(node.values[0], ast.Constant) else ''
            if isinstance(lead, str) and re.fullmatch(r'medklip(\.\w+)*\.', lead):
                d = ROOT.joinpath(*lead.rstrip('.').split('.'))
                out |= {f"{lead}{f.stem}" for f in d.glob('*.py') if f.stem != '__init__'}
    return {m for m in out if module_file(m)}


def closure(mods) -> set[str]:
    "Files (relative to the repo) of `mods` and everything they import, transitively."
    todo, seen = list(mods), set()
    while todo:
        m = todo.pop()
        f = module_file(m)
        if f is None or m in seen: continue
        seen.add(m)
        # the ignored files run nothing of a stage: the top `__init__` only imports `medklip.api` lazily, for `medklip.load`
        if f.relative_to(ROOT).as_posix() not in IGNORED: todo += list(imports_of(f.read_text(), m, f.name == '__init__.py'))
        parts = m.split('.')                    # importing a.b.c runs a/__init__, a/b/__init__
        todo += ['.'.join(parts[:i]) for i in range(1, len(parts))]
    return {module_file(m).relative_to(ROOT).as_posix() for m in seen} - IGNORED


def resources_of(files) -> set[str]:
    "Package data files (`medklip/resources/…`) that these source files name in a string: code reads them at run time."
    names = {f.name for f in (PKG/'resources').rglob('*') if f.is_file()}
    out = set()
    for f in files:
        for node in ast.walk(ast.parse((ROOT/f).read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                base = node.value.split('/')[-1]
                if base in names: out |= {p.relative_to(ROOT).as_posix() for p in (PKG/'resources').rglob(base)}
    return out


def notebook_imports(path:Path) -> set[str]:
    "`medklip` modules the code cells of a notebook import."
    nb = json.loads(path.read_text())
    out = set()
    for c in nb['cells']:
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source'])
        src = '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!')))
        try: out |= imports_of(src, 'medklip.nb')
        except SyntaxError: pass
    return out


def stage_code(dvc_yaml=ROOT/'dvc.yaml') -> dict[str, tuple[set[str], list[str]]]:
    "stage → (code files it runs, its deps)."
    import yaml
    sys.path.insert(0, str(ROOT))
    from medklip.cli import COMMANDS
    stages = yaml.safe_load(Path(dvc_yaml).read_text())['stages']
    out = {}
    for name, st in stages.items():
        body = st.get('do', st)
        cmd = ' '.join(body['cmd']) if isinstance(body['cmd'], list) else body['cmd']
        mods = set()
        for sub in re.findall(r'\bmedklip\s+([\w-]+)', cmd):
            if sub in COMMANDS: mods.add(COMMANDS[sub][0].split(':')[0])
        deps = [str(d) for d in body.get('deps', [])]
        for d in deps:                          # notebooks a stage executes (papermill) are code too
            p = ROOT/d
            nbs = sorted(p.glob('*.ipynb')) if p.is_dir() else ([p] if p.suffix == '.ipynb' else [])
            for nb in nbs: mods |= notebook_imports(nb)
        code = closure(mods)
        out[name] = (code | resources_of(code), deps)
    return out


def missing(dvc_yaml=ROOT/'dvc.yaml') -> dict[str, list[str]]:
    "stage → code files it runs that none of its deps (file or folder) covers."
    res = {}
    for name, (files, deps) in stage_code(dvc_yaml).items():
        norm = [d.rstrip('/') for d in deps]
        miss = sorted(f for f in files if not any(f == d or f.startswith(d + '/') for d in norm))
        if miss: res[name] = miss
    return res


def write_deps(dvc_yaml=ROOT/'dvc.yaml'):
    "Rewrite each stage's code deps (`medklip/…`) to exactly the files it runs, keeping its other deps and the comments."
    from ruamel.yaml import YAML
    y = YAML(); y.preserve_quotes = True; y.width = 4096
    doc = y.load(Path(dvc_yaml).read_text())
    code = stage_code(dvc_yaml)
    for name, st in doc['stages'].items():
        body = st['do'] if 'do' in st else st
        keep = [d for d in body.get('deps', []) if not str(d).startswith('medklip/')]
        body['deps'] = keep + sorted(code[name][0])
    with open(dvc_yaml, 'w') as f: y.dump(doc, f)


if __name__ == '__main__':
    if '--write' in sys.argv: write_deps()
    m = missing()
    for k, v in m.items(): print(f"{k}:\n" + '\n'.join(f"  - {f}" for f in v))
    if not m: print("every stage's deps cover the code it runs")
    sys.exit(1 if m else 0)
