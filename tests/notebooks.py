"""Run the example notebooks, and compare what they show with what they store.

The notebooks of ``examples/`` are stored with their outputs, so that a reader on
GitHub or in a fresh checkout sees the plots, the generated C and the comparisons
with PyTorch without running anything. ``tests/test_notebooks.py`` executes each one
again and checks that every stored output still matches in substance: the same kinds
of output (text, images, results) cell by cell, the same words, and numbers within
:data:`RELATIVE` of each other. A cell whose output legitimately varies (timings,
training curves in float32, line counts of machine-specific C) carries the tag
``varies``: only the kinds of its outputs are compared.

After changing a notebook or what it shows, store the outputs again::

    python tests/notebooks.py            # executes every notebook in place
"""

import pathlib
import re
import sys

import nbformat
from nbclient import NotebookClient

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / 'examples'
RELATIVE = 1e-3
"""Numbers in outputs match within this relative difference (or 1e-9 absolute:
errors of 1e-16 against PyTorch differ from machine to machine)."""

_NUMBER = re.compile(r'[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?')


def executed(path):
    """The notebook at ``path``, executed from top to bottom in a fresh kernel."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name='python3', record_timing=False,
                   resources={'metadata': {'path': str(EXAMPLES)}}).execute()
    return notebook


_BAR = re.compile(r'building \d+ kernels?, \d+ cached')


def _progress(output):
    """Whether ``output`` is a progress bar: building kernels draws one when the
    caches are cold, so what a run shows of it depends on what ran before."""
    if output['output_type'] == 'stream':
        text = output['text']       # a text bar: its lines, and the \r between
        return output['name'] == 'stderr' and (bool(_BAR.search(text))
                                               or not text.strip())
    return 'application/vnd.jupyter.widget-view+json' in output.get('data', {})


def _outputs(cell):
    return [output for output in cell.get('outputs', []) if not _progress(output)]


def _kinds(cell):
    """What a cell shows: ('stream', name), ('image', None), ('text', None)...; a
    run of writes to one stream is one output (the kernel splits it by timing)."""
    kinds = []
    for output in _outputs(cell):
        if output['output_type'] == 'stream':
            if kinds[-1:] != [('stream', output['name'])]:
                kinds.append(('stream', output['name']))
        elif output['output_type'] == 'error':
            kinds.append(('error', output['ename']))
        else:
            data = output.get('data', {})
            kinds.append(('image', None) if 'image/png' in data else ('text', None))
    return kinds


def _text(cell):
    parts = []
    for output in _outputs(cell):
        if output['output_type'] == 'stream':
            parts.append(output['text'])
        elif 'data' in output and 'image/png' not in output['data']:
            parts.append(output['data'].get('text/plain', ''))
    return ''.join(parts)


def _same_number(a, b):
    x, y = float(a), float(b)
    return abs(x - y) <= RELATIVE * max(abs(x), abs(y)) + 1e-9


def differences(stored, fresh):
    """Where ``fresh`` (just executed) no longer shows what ``stored`` does, as
    readable lines; empty when they match in substance."""
    found = []
    code = [(s, f) for s, f in zip(stored.cells, fresh.cells) if s.cell_type == 'code']
    for number, (old, new) in enumerate(code, start=1):
        where = f"code cell {number} ({old.source.splitlines()[0][:50]!r})"
        if _kinds(old) != _kinds(new):
            found.append(f"{where}: shows {_kinds(new)}, stored {_kinds(old)}")
            continue
        if 'varies' in old.metadata.get('tags', []):
            continue
        old_text, new_text = _text(old), _text(new)
        if _NUMBER.sub('#', old_text).split() != _NUMBER.sub('#', new_text).split():
            found.append(f"{where}: text changed:\n{new_text[:600]}\n(stored:\n"
                         f"{old_text[:600]})")
            continue
        for a, b in zip(_NUMBER.findall(old_text), _NUMBER.findall(new_text)):
            if not _same_number(a, b):
                found.append(f"{where}: {b} where {a} is stored")
                break
    return found


def main(paths):
    for path in paths or sorted(EXAMPLES.glob('*.ipynb')):
        notebook = executed(path)
        for cell in notebook.cells:          # stored without progress bars
            if cell.cell_type == 'code':
                cell.outputs = _outputs(cell)
        nbformat.write(notebook, path)
        print(f"stored the outputs of {path}")


if __name__ == '__main__':
    main([pathlib.Path(p) for p in sys.argv[1:]])
