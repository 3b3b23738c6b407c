"""The example notebooks run from top to bottom."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = pathlib.Path(__file__).parent.parent / 'examples'


@pytest.mark.parametrize('path', sorted(EXAMPLES.glob('*.ipynb')), ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv('DEVITO_ML_EPOCHS', '2')   # a short run of 03_training
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': str(EXAMPLES)}}).execute()
