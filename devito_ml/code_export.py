"""A net's generated C as users read it: each kernel once, opening with the map of
its sections to the layers, and the calls of kernels that blocks share."""

import os

from devito_ml.code_map import annotate

__all__ = ['NetListing']


class NetListing:
    """The C of the operators of one net.

    Parameters
    ----------
    name : str
        The net's name.
    layers : list of Layer
    loss_names : callable
        ``() -> [name, ...]``: the losses bound so far (the sections they own).
    """

    def __init__(self, name, layers, loss_names):
        self.name, self.layers, self.loss_names = name, layers, loss_names

    def listing(self, chains):
        """The annotated C of every kernel ``chains`` call, each once."""
        return '\n'.join(self.annotated(calls) for calls in kernel_calls(chains))

    def annotated(self, calls):
        """The C of one kernel, opening with which layer each section computes and,
        for a shared kernel, which layers each of its ``calls`` stands for."""
        part = calls[0]
        if not part.owners:
            owners = [layer.name for layer in self.layers] + self.loss_names()
            return annotate(part.code, owners,
                            f"devito_ml net `{self.name}`, operator `{part.name}`")
        title = [f"devito_ml kernel `{part.kernel_name}`, shared by blocks of the same "
                 f"work; net `{self.name}` calls it {len(calls)} time(s):"]
        title += [f"  {call.name}: {roles(call)}" for call in calls]
        return annotate(part.code, list(part.owners) + self.loss_names(),
                        '\n * '.join(title))

    def layer_code(self, chain, name):
        """The annotated C of the kernel of ``chain`` that computes layer ``name``.

        For a deeper net, the kernel of the block holding it: its tensors are named
        after their roles in the block (``conv1_W``, the block's first
        convolution's weights; ``src1_out``, the output of the layer feeding the
        block), and its opening comment maps them to the layers of each call.
        """
        calls = [part for part in chain.parts
                 if not part.owners or name in part.owners.values()]
        same = [part for part in chain.parts if part.kernel_name == calls[0].kernel_name]
        return self.annotated(same)

    def write(self, directory, chains):
        """Write the C of the operators ``chains``; return the paths.

        Each kernel is written once, to ``<kernel>.c``: for a net of one part, one
        a pass, named after it (``<name>_forward.c``, ``<name>_backward.c``,
        ``<name>_train_sgd.c``, ``<name>_<optimizer>_step.c``...); for a deeper net,
        one a distinct block, named by what it computes, and ``<name>_calls.txt``,
        the kernels each operator calls in the order they run and the layers each
        call stands for (:meth:`call_map`). Each file opens with a comment mapping
        its sections to the layers and marks every section with the layers it
        computes.
        """
        os.makedirs(directory, exist_ok=True)
        paths = []
        for calls in kernel_calls(chains):
            paths.append(os.path.join(directory, f"{calls[0].kernel_name}.c"))
            with open(paths[-1], 'w') as handle:
                handle.write(self.annotated(calls))
        if any(part.owners for chain in chains for part in chain.parts):
            paths.append(os.path.join(directory, f"{self.name}_calls.txt"))
            with open(paths[-1], 'w') as handle:
                handle.write(self.call_map(chains))
        return paths

    def call_map(self, chains):
        """Which kernel each operator of ``chains`` calls, in the order they run,
        and the layers each call stands for."""
        lines = [f"# devito_ml net `{self.name}`: the kernels each operator calls, in "
                 "the order they run, and the layers each call stands for"]
        for chain in chains:
            distinct = len({part.kernel_name for part in chain.parts})
            lines += ['', f"{chain.name}: {len(chain.parts)} calls, {distinct} kernels"]
            lines += [f"  {part.name:<28} {part.kernel_name}" +
                      (f"\n  {'':<28}   {roles(part)}" if part.owners else '')
                      for part in chain.parts]
        return '\n'.join(lines) + '\n'


def kernel_calls(chains):
    """The parts of ``chains`` grouped by the kernel they call, in the order of
    their first call: ``[[part, ...], ...]``."""
    calls = {}
    for chain in chains:
        for part in chain.parts:
            calls.setdefault(part.kernel_name, []).append(part)
    return list(calls.values())


def roles(part):
    """``conv1=layer1_0_conv1 bn1=layer1_0_bn1 ...``: the layers of one call."""
    return ' '.join(f"{canonical}={own}" for canonical, own in part.owners.items())
