import subprocess, sys
from medklip.cli import main, COMMANDS


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS: assert name in out


def test_unknown_command_is_one_clear_line(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-c", "import sys; from medklip.cli import main; sys.exit(main(['--help']))"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "usage: medklip" in r.stdout
