"""The command line: tables on success, one-line errors and a non-zero exit on failure."""

import subprocess
import sys

import pytest

from lightnets.cli import main


def test_models_table(capsys):
    assert main(["models", "mobilenetv3_large_100"]) == 0
    out = capsys.readouterr().out
    header, rule, *rows = out.strip().splitlines()
    assert header.split()[:2] == ["model", "input"]
    assert rows[0].split()[:6] == ["mobilenetv3_large_100", "224", "5.483", "5.400", "216.6", "219.0"]
    assert len(rows) == 2  # and its _cifar variant


def test_info_lists_stages(capsys):
    assert main(["info", "mobilenetv1_100_cifar"]) == 0
    out = capsys.readouterr().out
    assert "3,217,226 parameters" in out
    assert "stages.4      1024       8  4x4" in out


@pytest.mark.parametrize("argv,message", [
    (["info", "mobilnetv3"], "lightnets: error: unknown model 'mobilnetv3'; did you mean"),
    (["models", "resnet"], "lightnets: error: no model matches 'resnet'"),
])
def test_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_debug_shows_traceback():
    proc = subprocess.run([sys.executable, "-m", "lightnets.cli", "--debug", "info", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "lightnets.cli", "info", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
