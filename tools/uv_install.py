"""`uv pip install ARGS` into this Python's environment with pip's own index settings (used by `make setup`).

uv does not read pip's configuration (pip.conf files and PIP_* variables), so this passes what `pip config list` shows
(index-url, extra-index-url, find-links, trusted-host, constraint, cert, timeout, proxy) to uv as flags or variables,
each only where the matching UV_* variable is not set already. pip's resolver considers every index at once, so the
index strategy is uv's `unsafe-best-match` unless UV_INDEX_STRATEGY says otherwise. Exits with uv's status (the
Makefile falls back to pip when it is not 0)."""
import os, shlex, subprocess, sys


def pip_config(python=sys.executable) -> dict:
    "pip's effective settings: key -> value, PIP_* variables over files, later files over earlier ones."
    r = subprocess.run([python, '-m', 'pip', 'config', 'list'], capture_output=True, text=True)
    files, env = {}, {}
    for line in r.stdout.splitlines():
        k, sep, v = line.partition('=')
        if not sep or '.' not in k: continue
        section, key = k.rsplit('.', 1)
        if section not in (':env:', 'global', 'install'): continue
        (env if section == ':env:' else files)[key] = v.strip().strip("'\"")
    return {**files, **env}


def uv_args(cfg:dict, environ=os.environ) -> tuple[list, dict]:
    "(uv flags, extra environment variables) carrying pip's settings `cfg` where uv's own variables do not set them."
    flags, env = [], {}
    unset = lambda *names: not any(environ.get(n) for n in names)
    if cfg.get('no-index', '').lower() in ('1', 'true', 'yes', 'on') and unset('UV_NO_INDEX'): flags.append('--no-index')
    if cfg.get('index-url') and unset('UV_DEFAULT_INDEX', 'UV_INDEX_URL'): flags += ['--default-index', cfg['index-url']]
    for opt, key, names in (('--index', 'extra-index-url', ('UV_INDEX', 'UV_EXTRA_INDEX_URL')), ('--find-links', 'find-links', ('UV_FIND_LINKS',)),
                            ('--allow-insecure-host', 'trusted-host', ('UV_INSECURE_HOST',)), ('--constraint', 'constraint', ('UV_CONSTRAINT',))):
        if cfg.get(key) and unset(*names):
            for v in cfg[key].split(): flags += [opt, v]
    if unset('UV_INDEX_STRATEGY'): flags += ['--index-strategy', 'unsafe-best-match']
    if cfg.get('cert') and unset('SSL_CERT_FILE'): env['SSL_CERT_FILE'] = cfg['cert']
    if cfg.get('timeout') or cfg.get('default-timeout'):
        if unset('UV_HTTP_TIMEOUT'): env['UV_HTTP_TIMEOUT'] = cfg.get('timeout') or cfg['default-timeout']
    if cfg.get('proxy') and unset('HTTPS_PROXY', 'https_proxy'): env['HTTPS_PROXY'] = env['HTTP_PROXY'] = cfg['proxy']
    return flags, env


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    flags, env = uv_args(pip_config())
    cmd = [sys.executable, '-m', 'uv', 'pip', 'install', '--python', sys.executable, *flags, *argv]
    print('uv_install:', shlex.join(cmd[2:]), *(f'{k}={v}' for k, v in env.items()), flush=True)
    return subprocess.run(cmd, env={**os.environ, **env}).returncode


if __name__ == '__main__': sys.exit(main())
