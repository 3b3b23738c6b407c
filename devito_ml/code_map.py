"""A map from the layers of a net to the generated C that computes them.

Devito names the timed regions of an operator ``section0``, ``section1``...; which
layer each computes is written nowhere in the C. Every tensor of a layer is named
after it (``conv1_out``, ``conv1_fwd_src``, ``conv1_dW``), so the tensors a section
writes say whose work it is; so do its loops (``conv1_out_h``: see ``layer.py``,
Loop names). :func:`annotate` adds a comment at the top of the C listing every layer
with its sections and loops, then every section with the tensors it writes, and one
above each section naming them. Comments only: the code compiled is the same.
"""

import textwrap

import re

__all__ = ['annotate', 'section_writers', 'owned_loops']

_SECTION = re.compile(r'^(?P<indent>[ \t]*)START\((?P<name>section\d+)\)[ \t]*$', re.M)
_LOOP = re.compile(r'\bfor \(int (?P<name>[A-Za-z_]\w*) = ')
_WRITE = re.compile(r'^[ \t]*(?P<name>[A-Za-z_]\w*)\[[^;]*?\][ \t]*[-+*/]?=(?!=)', re.M)


def _owner(tensor, owners):
    """The longest name in ``owners`` that ``tensor`` is named after."""
    matches = [o for o in owners if tensor == o or tensor.startswith(o + '_')]
    return max(matches, key=len) if matches else None


def section_writers(code, owners):
    """``[(section, [(owner, [tensors written])])]`` in the order of the C.

    Parameters
    ----------
    code : str
        C printed by Devito.
    owners : list of str
        Layer names (and other prefixes, e.g. the loss's), to attribute tensors to.
    """
    starts = list(_SECTION.finditer(code))
    sections = []
    for match in starts:
        name = match.group('name')
        end = code.find(f"STOP({name},", match.end())
        body = code[match.end():end if end >= 0 else len(code)]
        sections.append((name, list(_by_owner(_WRITE, body, owners).items())))
    return sections


def owned_loops(code, owners):
    """``{owner: [loop variables named after it]}``, in the order of the C."""
    return _by_owner(_LOOP, code, owners)


def _by_owner(pattern, code, owners):
    """``{owner: [names]}``: the ``name`` group of every match of ``pattern``,
    once each, under the owner it is named after."""
    found = {}
    for match in pattern.finditer(code):
        name = match.group('name')
        owner = _owner(name, owners)
        if owner is not None and name not in found.setdefault(owner, []):
            found[owner].append(name)
    return found


LEGEND = ("Loops are named <layer>_<tensor>_<axis>: axes n sample, c channel, h row, "
          "w column, f feature, ky kx kernel taps, k a kernel's output channel, "
          "lane pos row column sum in register tiles; "
          "tensors out, in (as the forward reads it), din (the input gradient), or a "
          "schedule's buffer (in_cl, dz_cl, fwd, bwd, dW tiles). `n` alone is the "
          "batch.")


def _describe(writers):
    return '; '.join(f"{owner}: {', '.join(tensors)}" for owner, tensors in writers) \
        or 'no layer tensor written'


def annotate(code, owners, title):
    """``code`` with the map of its sections to ``owners`` as comments.

    Parameters
    ----------
    code : str
        C printed by Devito.
    owners : list of str
        Layer names, in the net's order (and the loss's name).
    title : str
        First line of the map (which net and operator this is).

    Returns
    -------
    str
    """
    sections = section_writers(code, owners)
    if not sections:
        return code
    loops = owned_loops(code, owners)
    width = max(len(name) for name, _ in sections)
    lines = [f"/* {title}", " *"]
    lines += textwrap.wrap(LEGEND, 84, initial_indent=' * ', subsequent_indent=' * ')
    lines += [" *", " * Layers, the sections (timed regions) writing their tensors, and "
              "their loops:"]
    for owner in owners:
        names = [name for name, writers in sections if owner in dict(writers)]
        if names or loops.get(owner):   # loops without a write: its output, read
            lines += textwrap.wrap(' '.join(names) or '(reads only)', 84,
                                   initial_indent=f" *   {owner:<14} ",
                                   subsequent_indent=f" *   {'':<14} ")
        if loops.get(owner):
            lines += textwrap.wrap(' '.join(loops[owner]), 84,
                                   initial_indent=f" *   {'':<14} loops: ",
                                   subsequent_indent=f" *   {'':<14}        ")
    lines += [" *", " * Sections and the tensors they write:"]
    for name, writers in sections:
        lines.append(f" *   {name:<{width}}  {_describe(writers)}")
    lines.append(" */")
    header = '\n'.join(lines) + '\n'

    def marked(match):
        writers = dict(sections)[match.group('name')]
        return f"{match.group('indent')}/* {_describe(writers)} */\n{match.group(0)}"

    code = _SECTION.sub(marked, code)
    first = code.find('\n') + 1 if code.startswith('/*') else 0
    return code[:first] + header + code[first:]
