"""The package is layered: no module imports, directly or through others, a module
that imports it back (a function-level import counts as much as one at the top)."""

import ast
import pathlib

import devito_ml

PACKAGE = pathlib.Path(devito_ml.__file__).parent


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph():
    """``{module: {devito_ml module it imports}}``, from the source. ``from a
    import b`` is an edge to ``a.b`` where that is a module, else to ``a``; a
    package's ``__init__``, which a submodule's import runs first, is an edge only
    where it is named."""
    modules = {module_name(path): path for path in PACKAGE.rglob('*.py')}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                named = {f"{node.module}.{alias.name}" for alias in node.names}
                inside = named & modules.keys()
                edges |= inside | ({node.module} if named - inside else set())
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_is_read_whole():
    graph = import_graph()
    assert {'devito_ml.net', 'devito_ml.training', 'devito_ml.distributed',
            'devito_ml.layers.conv'} <= graph.keys()
    assert 'devito_ml.layer' in graph['devito_ml.layers.conv']


def test_a_cycle_would_be_found():
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_training_never_imports_mpi_code():
    graph = import_graph()
    seen, todo = set(), ['devito_ml.training']
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph[module]
    assert 'devito_ml.distributed' not in seen
