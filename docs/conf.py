"""Sphinx configuration of devito_ml's documentation.

Build it with ``python -m sphinx -W -b html docs docs/_build/html``; the test suite
does the same (``tests/test_docs.py``), warnings as errors. The notebooks of
``examples/`` are copied into ``docs/examples/`` (not kept in git) and rendered with
their stored outputs, not executed.
"""

import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

project = 'devito_ml'
author = 'the devito_ml developers'
extensions = ['sphinx.ext.autodoc', 'sphinx.ext.napoleon', 'sphinx.ext.mathjax',
              'sphinx.ext.viewcode', 'myst_nb']
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_custom_sections = [('Shape', 'Notes')]
autodoc_member_order = 'bysource'
autodoc_default_options = {'members': True, 'show-inheritance': True}
nb_execution_mode = 'off'
exclude_patterns = ['_build']
html_theme = 'alabaster'
html_static_path = []
suppress_warnings = ['myst.header']


def _copy_notebooks():
    examples = os.path.join(os.path.dirname(HERE), 'examples')
    target = os.path.join(HERE, 'examples')
    os.makedirs(target, exist_ok=True)
    for name in sorted(os.listdir(examples)):
        if name.endswith('.ipynb'):
            shutil.copyfile(os.path.join(examples, name), os.path.join(target, name))


_copy_notebooks()
