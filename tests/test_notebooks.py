"""The example notebooks run from top to bottom, and still show what they store."""

import nbformat
import pytest

from notebooks import EXAMPLES, differences, executed


@pytest.mark.parametrize('path', sorted(EXAMPLES.glob('*.ipynb')), ids=lambda p: p.name)
def test_notebook_shows_what_it_stores(path):
    stored = nbformat.read(path, as_version=4)
    code = [cell for cell in stored.cells if cell.cell_type == 'code']
    assert any(cell.get('outputs') for cell in code), \
        f"{path.name} is stored without outputs: run `python tests/notebooks.py`"
    problems = differences(stored, executed(path))
    assert not problems, '\n'.join(problems)


def test_stored_outputs_that_differ_are_found():
    """The comparison is not vacuous: a changed number, word or output kind shows."""
    def notebook(text, kind='stream'):
        output = nbformat.v4.new_output('stream', name='stdout', text=text) \
            if kind == 'stream' else nbformat.v4.new_output(
                'display_data', data={'image/png': 'iVBOR', 'text/plain': 'Figure'})
        cell = nbformat.v4.new_code_cell('print(x)', outputs=[output])
        return nbformat.v4.new_notebook(cells=[cell])

    stored = notebook('accuracy 0.9833 after 20 epochs\n')
    assert not differences(stored, notebook('accuracy 0.98331 after 20 epochs\n'))
    assert differences(stored, notebook('accuracy 0.9500 after 20 epochs\n'))
    assert differences(stored, notebook('accuracy 0.9833 after 21 epochs\n'))
    assert differences(stored, notebook('loss 0.9833 after 20 epochs\n'))
    assert differences(stored, notebook('', kind='image'))
    split = notebook('accuracy 0.9833 ')
    split.cells[0].outputs.append(nbformat.v4.new_output('stream', name='stdout',
                                                         text='after 20 epochs\n'))
    assert not differences(stored, split)
    varies = notebook('built in 24.1 s\n')
    varies.cells[0].metadata['tags'] = ['varies']
    assert not differences(varies, notebook('built in 2.4 s\n'))


def test_progress_bars_are_not_compared():
    """Building kernels draws a bar where the caches are cold: a run may show one
    that the stored notebook does not, and the other way round."""
    def notebook(*outputs):
        cell = nbformat.v4.new_code_cell('net.forward(x)', outputs=list(outputs))
        return nbformat.v4.new_notebook(cells=[cell])

    result = nbformat.v4.new_output('stream', name='stdout', text='loss 0.25\n')
    text_bar = nbformat.v4.new_output('stream', name='stderr',
                                      text='\rbuilding 14 kernels, 6 cached:  50%|')
    widget = nbformat.v4.new_output('display_data', data={
        'application/vnd.jupyter.widget-view+json': {'model_id': 'x'},
        'text/plain': 'building 3 kernels, 0 cached'})
    assert not differences(notebook(result), notebook(text_bar, result))
    assert not differences(notebook(widget, result), notebook(result))
    assert differences(notebook(result), notebook(
        nbformat.v4.new_output('stream', name='stderr', text='a warning\n'), result))
