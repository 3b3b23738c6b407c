"""The README's main job: `devito-ml codegen` writes the generated C."""

import subprocess
import sys


def test_codegen_writes_the_generated_c(tmp_path):
    run = subprocess.run([sys.executable, '-m', 'devito_ml.cli', 'codegen', '--out',
                          str(tmp_path), '--batch-size', '8'],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert 'd loss / d conv1_W' in run.stdout
    assert (tmp_path / 'lenet5_forward.c').read_text().count('lenet5_forward') >= 1
    assert 'conv1_dW' in (tmp_path / 'lenet5_backward.c').read_text()


def test_bad_arguments_give_one_line_and_no_traceback():
    run = subprocess.run([sys.executable, '-m', 'devito_ml.cli', 'codegen',
                          '--batch-size', '0'], capture_output=True, text=True)
    assert run.returncode != 0
    assert 'Traceback' not in run.stderr and '--batch-size must be positive' in run.stderr
