"""Seconds of each pipeline stage: what `make repro` runs, timed step by step (set-up, demo data, each `dvc repro` stage).

    .venv/bin/python bench/pipeline.py                   # demo-data + dvc add + dvc repro, seconds per stage and total
    .venv/bin/python bench/pipeline.py --setup --force   # also time `make setup`; re-run every stage (dvc repro --force)
    .venv/bin/python bench/pipeline.py --stages pretrain zeroshot --no-data --json times.json
    .venv/bin/python bench/pipeline.py --dry-run         # only print the commands it would run

Stage times come from `dvc repro`'s own output: a stage runs from its "Running stage 'NAME'" line to the next stage's
line (or the end), so DVC's hashing and caching of its outputs count in it; stages DVC skips as unchanged are listed
as skipped, stages restored from the run cache as cached. For a fresh-clone figure, run it in a fresh clone (`git clone … && cd … && python3 bench/pipeline.py --setup`,
which runs `make setup` first, with the system python3 before .venv exists). Record figures in BENCHMARKS.md with the machine.
"""
from __future__ import annotations
import argparse, json, os, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STARTS = re.compile(r"^\s*(?:Running stage '([^']+)'|Stage '([^']+)' is cached - skipping run)")
SKIPS = re.compile(r"^\s*Stage '([^']+)' didn't change, skipping")


def run_timed(name:str, cmd:list[str], cwd, echo=print) -> dict:
    "Run one command, streaming its output; its seconds (a failing command raises with its exit code)."
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in p.stdout: echo(line.rstrip('\n'))
    if p.wait(): raise SystemExit(f"bench/pipeline.py: {name} failed (exit {p.returncode}): {' '.join(cmd)}")
    return dict(step=name, seconds=round(time.perf_counter() - t, 1))


def repro_timed(cmd:list[str], cwd, echo=print, clock=time.perf_counter) -> list[dict]:
    "Run a `dvc repro` command; seconds of each stage it ran (from its 'Running stage' line to the next), skipped ones at 0."
    rows, cur, t0 = [], None, clock()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    def close(now):
        if cur is not None: cur['seconds'] = round(now - cur.pop('_t'), 1)
    for line in p.stdout:
        echo(line.rstrip('\n'))
        now = clock()
        if m := STARTS.match(line):
            close(now); cur = dict(step=m.group(1) or m.group(2), _t=now, **({} if m.group(1) else dict(cached=True))); rows.append(cur)
        elif m := SKIPS.match(line):
            close(now); cur = None; rows.append(dict(step=m.group(1), seconds=0.0, skipped=True))
    p.wait(); close(clock())
    if p.returncode: raise SystemExit(f"bench/pipeline.py: {' '.join(cmd)} failed (exit {p.returncode})"
                                      + (f" in stage {rows[-1]['step']}" if rows else ''))
    return rows


def plan(a) -> list[tuple[str, list[str]]]:
    "The (name, command) steps `make repro` runs, as chosen by the flags."
    venv = Path(a.venv)
    py, dvc = str(venv/'bin'/'python'), a.dvc or str(venv/'bin'/'dvc')
    steps = []
    if a.setup: steps.append(('setup', ['make', 'setup']))
    if not a.no_data:
        steps.append(('demo-data', [py, '-m', 'medklip.cli', 'demo-data', '--config', a.params]))
        steps.append(('dvc add data', [dvc, 'add', '-q', 'data']))
    steps.append(('dvc repro', [dvc, 'repro'] + (['--force'] if a.force else []) + list(a.stages or [])))
    return steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--setup', action='store_true', help='time `make setup` first (venv and pinned packages)')
    ap.add_argument('--no-data', action='store_true', help='skip `medklip demo-data` and `dvc add data`')
    ap.add_argument('--force', action='store_true', help='dvc repro --force: run every stage, cached or not')
    ap.add_argument('--stages', nargs='+', help='only these stages (and what they depend on), as `dvc repro STAGE…`')
    ap.add_argument('--params', default='params.yaml'); ap.add_argument('--venv', default=str(ROOT/'.venv'))
    ap.add_argument('--dvc', default=None, help='the dvc command (default: VENV/bin/dvc)')
    ap.add_argument('--cwd', default=str(ROOT), help='the project folder (default: this checkout)')
    ap.add_argument('--json', default=None, help='also write the rows and total to this JSON file')
    ap.add_argument('--dry-run', action='store_true', help='print the commands, run nothing')
    a = ap.parse_args(argv)
    steps = plan(a)
    if a.dry_run:
        for name, cmd in steps: print(f"{name}: {' '.join(cmd)}")
        return 0
    echo = lambda line: print(line, file=sys.stderr, flush=True)      # the commands' own output, apart from the table
    # as the Makefile: the venv's commands on PATH (dvc stages call `medklip`), the hub off
    os.environ['PATH'] = f"{Path(a.venv).resolve()/'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE'): os.environ.setdefault(k, '1')
    rows, t0 = [], time.perf_counter()
    for name, cmd in steps:
        if name == 'dvc repro':
            t = time.perf_counter(); stages = repro_timed(cmd, a.cwd, echo)
            rest = round(time.perf_counter() - t - sum(r['seconds'] for r in stages), 1)
            rows += stages + [dict(step='dvc repro (outside stages)', seconds=rest)]
        else: rows.append(run_timed(name, cmd, a.cwd, echo))
    total = round(time.perf_counter() - t0, 1)
    width = max(len(r['step']) for r in rows + [dict(step='total')])
    for r in rows: print(f"{r['step']:<{width}}  {r['seconds']:>7.1f} s" + ('  (skipped: unchanged)' if r.get('skipped') else '')
                         + ('  (from the run cache)' if r.get('cached') else ''))
    print(f"{'total':<{width}}  {total:>7.1f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(dict(rows=rows, total=total, cpus=os.cpu_count(), load=os.getloadavg()), indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
