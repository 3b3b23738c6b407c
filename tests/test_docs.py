"""The API reference builds from the numpydoc docstrings, with the notebooks, and
without a single Sphinx warning."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_documentation_builds_without_warnings(tmp_path):
    pytest.importorskip('sphinx', reason="the docs need `pip install -e '.[test]'`")
    pytest.importorskip('myst_nb', reason="the docs need `pip install -e '.[test]'`")
    run = subprocess.run([sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q',
                          '-b', 'html', os.path.join(ROOT, 'docs'), str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    reference = (tmp_path / 'api.html').read_text()
    for name in ('Net.input_gradient', 'BatchNorm', 'fit', 'Adam', 'annotate'):
        assert name in reference, name
    for notebook in ('01_simple_backprop', '02_generated_code', '03_training',
                     '04_resnet'):
        assert (tmp_path / 'examples' / f'{notebook}.html').exists()
