"""The weight gradient of a Winograd correlation: ``F(3 x 3, m x m)`` on the
forward pass's own transformed input.

The gradient of a 3x3 kernel is a correlation with 3x3 outputs: each ``m x m``
block of ``dz`` is a kernel run over the ``(m + 2) x (m + 2)`` block of the padded
input that its outputs read,

    dW_kc = sum over blocks of A'^T [ (G' dz_k G'^T) . (B^T d_c B) ] A'

with the same interpolation points as the forward ``F(m x m, 3 x 3)``, hence its
very ``B^T``: the forward pass's transformed input ``V`` is read again, not
recomputed. The sum over the blocks of the batch is, at each transformed position,
one matrix product ``V^T Z`` (``(m + 2)**2`` multiply-adds per block and pair of
channels, where the direct sums spend ``9 m**2``).
"""

import functools

import sympy
from devito import ConditionalDimension, Eq
from devito.types.utils import IgnoreDimSort

from devito_ml.layers.conv_tiles import literal_extent
from devito_ml.layers.matmul_tiles import TiledMatmul
from devito_ml.layers.winograd import TRANSFORMS, transform_table, two_sided_transform
from devito_ml.batch import batch_loop
from devito_ml.symbolics import Select

__all__ = ['WinogradWeightGradient', 'gradient_transforms']


@functools.lru_cache(maxsize=None)
def gradient_transforms(block):
    """``(G', A'^T)`` of ``F(3 x 3, m x m)`` on the points of ``F(m x m, 3 x 3)``,
    exact.

    With ``B`` the forward's input transform, the identity needs
    ``A'^T[i, p] G'[p, y] = B^{-1}[p, y + i]`` for every transformed position
    ``p``: each position's ``3 x m`` table of ``B^{-1}`` entries is a product of a
    column and a row (the powers of its point), factored here.
    """
    input_transform = sympy.Matrix(TRANSFORMS[block][0])
    inverse = input_transform.T.inv()
    points = block + 2
    output = sympy.zeros(3, points)
    kernel = sympy.zeros(points, block)
    for p in range(points):
        table = sympy.Matrix(3, block, lambda i, y: inverse[p, y + i])
        i0, y0 = next((i, y) for i in range(3) for y in range(block) if table[i, y])
        for i in range(3):
            output[i, p] = table[i, y0] / table[i0, y0]
        for y in range(block):
            kernel[p, y] = table[i0, y]
        if table != output[:, p] * kernel[p, :]:
            raise ArithmeticError(f"F(3x3, {block}x{block}): position {p} does not "
                                  "factor")
    return kernel.tolist(), output.tolist()


class WinogradWeightGradient:
    """``dW[k, c, i, j] = sum over (n, y, x) of dz[n, y, x, k] * source[n, y + i,
    x + j, c]`` through the transformed input of ``correlation`` (a
    :class:`~devito_ml.layers.winograd.WinogradCorrelation`).

    Parameters
    ----------
    name : str
        Prefix of its tensors and loops (``conv1_wwino``).
    correlation : WinogradCorrelation
        The forward pass, whose ``transformed`` input it reads.

    Notes
    -----
    :meth:`gradient_equations` transforms each block of ``dz`` (``Z = G' dz
    G'^T``) into the products' ``b``, zeros for the samples past the active batch
    (their transformed input is stale); ``products.equations()`` sums ``V^T Z``
    over the blocks at each transformed position; :meth:`output_equations` hands
    ``A'^T (V^T Z) A'`` to the caller to store.
    """

    def __init__(self, name, correlation):
        self.name, self.correlation = name, correlation
        self.kernel_transform, output_transform = gradient_transforms(correlation.block)
        forward = correlation
        self.products = TiledMatmul(
            f"{name}_gemm", forward.dtype, forward.channels, forward.positions,
            forward.outputs,
            a_at=lambda channel, block: forward.transformed_at(self.products.group,
                                                               block, channel),
            groups=forward.points ** 2)
        self.gradient_table = transform_table(f"{name}_G", self.kernel_transform,
                                              forward.dtype)
        self.output_table = transform_table(f"{name}_AT", output_transform,
                                            forward.dtype)

    def gradient_equations(self, read):
        """``Z = G' dz G'^T`` of every block of the active batch, ``dz`` from
        ``read(sample, output channel, row, column)``; zeros for the samples past
        it (the products sum over every block of the largest batch, and those
        samples' transformed input is stale): a second nest, guarded, that
        writes nothing at full batch."""
        forward, products = self.correlation, self.products
        m, points = forward.block, forward.points
        name, padded = self.name, products.padded_columns
        n = batch_loop(f"{name}_Z_n", forward.batch)    # the active batch
        by = literal_extent(f"{name}_Z_by", forward.block_rows)
        bx = literal_extent(f"{name}_Z_bx", forward.block_columns)
        output = literal_extent(f"{name}_Z_k", padded)
        clamped = sympy.Min(output, forward.outputs - 1)
        block = forward.block_number(n, by, bx)
        in_range = output < forward.outputs

        def store(a, b, value):
            if padded > forward.outputs:
                value = Select(in_range, value, 0)
            return Eq(products.b_at(block, output, a * points + b), value)

        eqs = two_sided_transform(
            f"{name}_Z", self.gradient_table,
            lambda y, x: read(n, clamped, by * m + y, bx * m + x), store,
            (n, by, bx, output))
        sample = literal_extent(f"{name}_Zs_n", forward.batch)
        stale = ConditionalDimension(f"{name}_Zs_stale", parent=sample,
                                     condition=sympy.Gt(sample, n.symbolic_max))
        entry = literal_extent(f"{name}_Zs_entry",
                               forward.block_rows * forward.block_columns * padded)
        first = forward.block_number(sample, 0, 0) * padded
        position = literal_extent(f"{name}_Zs_position", points ** 2)
        eqs.append(Eq(products.b_at(0, first + entry, position), 0,
                      implicit_dims=IgnoreDimSort((sample, stale, position, entry))))
        return eqs

    def output_equations(self, store):
        """``dW = A'^T (V^T Z) A'``, each entry stored by ``store(output channel,
        input channel, row, column, value, loops)`` (an Eq; ``loops`` the nest's
        Dimensions in their order, output channels innermost)."""
        forward, name = self.correlation, self.name
        points, at = forward.points, self.output_table
        channel = literal_extent(f"{name}_dW_c", forward.channels)
        i = literal_extent(f"{name}_dW_i", 3)
        j = literal_extent(f"{name}_dW_j", 3)
        output = literal_extent(f"{name}_dW_k", forward.outputs)
        value = sum(at[i, a] * at[j, b] *
                    self.products.target_at(channel, output, a * points + b)
                    for a in range(points) for b in range(points))
        return [store(output, channel, i, j, value, (channel, i, j, output))]

    def equations(self, read, store):
        """Every nest in order (see :meth:`gradient_equations`)."""
        return self.gradient_equations(read) + self.products.equations() + \
            self.output_equations(store)
