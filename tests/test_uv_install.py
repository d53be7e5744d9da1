"tools/uv_install.py: `make setup` hands pip's index settings to uv (which does not read pip.conf or PIP_* variables)."
import importlib.util, subprocess, types
from pathlib import Path

spec = importlib.util.spec_from_file_location('uv_install', Path(__file__).resolve().parents[1]/'tools'/'uv_install.py')
U = importlib.util.module_from_spec(spec); spec.loader.exec_module(U)


def test_pip_config_env_over_files(monkeypatch):
    out = ("global.extra-index-url='file:///a/simple file:///b/simple'\nglobal.find-links='/opt/w'\n"
           "user.index-url='https://ignored'\ninstall.index-url='https://files'\n:env:.find-links='/env/w'\n:env:.default-timeout='180'\n")
    monkeypatch.setattr(U.subprocess, 'run', lambda *a, **k: types.SimpleNamespace(stdout=out, returncode=0))
    assert U.pip_config() == {'extra-index-url': 'file:///a/simple file:///b/simple', 'find-links': '/env/w',
                              'index-url': 'https://files', 'default-timeout': '180'}


def test_uv_args_maps_pip_settings_unless_uv_set():
    cfg = {'index-url': 'https://mirror/simple', 'extra-index-url': 'file:///a/simple file:///b/simple', 'find-links': '/opt/w',
           'constraint': '/etc/c.txt', 'cert': '/etc/ca.crt', 'default-timeout': '180', 'trusted-host': 'mirror'}
    flags, env = U.uv_args(cfg, environ={})
    assert flags == ['--default-index', 'https://mirror/simple', '--index', 'file:///a/simple', '--index', 'file:///b/simple',
                     '--find-links', '/opt/w', '--allow-insecure-host', 'mirror', '--constraint', '/etc/c.txt',
                     '--index-strategy', 'unsafe-best-match']
    assert env == {'SSL_CERT_FILE': '/etc/ca.crt', 'UV_HTTP_TIMEOUT': '180'}
    flags, env = U.uv_args(cfg, environ={'UV_INDEX_URL': 'x', 'UV_FIND_LINKS': 'y', 'UV_INDEX_STRATEGY': 'first-index', 'SSL_CERT_FILE': 'z'})
    assert '--default-index' not in flags and '--find-links' not in flags and '--index-strategy' not in flags and '--index' in flags
    assert 'SSL_CERT_FILE' not in env
    assert U.uv_args({'no-index': 'true'}, environ={})[0][0] == '--no-index'


def test_uv_install_runs_uv_with_this_python(monkeypatch):
    calls = []
    monkeypatch.setattr(U, 'pip_config', lambda: {'find-links': '/opt/w'})
    monkeypatch.setattr(U.subprocess, 'run', lambda cmd, env: calls.append((cmd, env)) or types.SimpleNamespace(returncode=3))
    assert U.main(['-q', 'pkg==1']) == 3
    cmd, env = calls[0]
    assert cmd[1:6] == ['-m', 'uv', 'pip', 'install', '--python'] and cmd[-2:] == ['-q', 'pkg==1'] and '/opt/w' in cmd
