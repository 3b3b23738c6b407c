"""The equations of a net's passes, assembled from its layers' and its loss's, and
pruned of what no pass, part or user reads."""

from devito import Eq

from devito_ml.batch_sums import lowered
from devito_ml.pruning import pruned

__all__ = ['forward_equations', 'backward_equations', 'loss_only_equations']


def forward_equations(graph, training=True, nodes=None):
    """Equations of the forward pass (of ``nodes``, default all) of
    :class:`~devito_ml.net_graph.NetGraph` ``graph``, each layer after its inputs;
    the sums over the batch summed by ``graph.statistics`` where it is set
    (:mod:`devito_ml.batch_sums`)."""
    eqs = []
    for node in graph.nodes if nodes is None else nodes:
        sources = [graph.result_of(parent) for parent in node.inputs]
        eqs += node.layer.net_equations(sources, training)
    return lowered(eqs, graph.statistics)


def backward_equations(graph, loss, training=True, nodes=None, input_gradient=False):
    """Loss value and gradient (when ``nodes`` end the net), then every layer's
    adjoint in reverse order.

    Where an output feeds several layers, its gradient is the sum of what each
    consumer wrote into its own buffer. The loss reads what it asks of the last
    layer (:meth:`~devito_ml.loss.base.Loss.reads_from`: cross entropy the logits
    of a :class:`~devito_ml.FullyConnectedSoftmax`), and that layer's adjoint starts
    from the gradient the loss wrote.

    With ``input_gradient``, the gradient of the network's input is computed and
    the parameters' gradients only where it needs them (BatchNorm's).
    """
    last = graph.output_layer
    nodes = graph.nodes if nodes is None else nodes
    value, gradient = loss.reads_from(last)
    eqs = loss.equations(value, gradient) if nodes[-1] is graph.nodes[-1] else []
    for node in reversed(nodes):
        layer = node.layer
        edges = graph.consumers(node)
        if len(edges) > 1:
            dims = layer.out_storage
            total = sum(consumer.layer.input_gradients_of(index)[dims]
                        for consumer, index in edges)
            eqs.append(Eq(layer.result_gradients[dims], total))
        eqs += layer.net_backprop_equations(training,
                                            value if layer is last else None)
    eqs = lowered(eqs, graph.statistics)
    if input_gradient:
        return pruned(eqs, [], read_elsewhere(graph, loss, parameter_gradients=False))
    return pruned(eqs, graph.unread_input_gradients(), read_elsewhere(graph, loss))


def loss_only_equations(graph, loss):
    """The loss value without its gradient (evaluating)."""
    value, gradient = loss.reads_from(graph.output_layer)
    return pruned(loss.equations(value, gradient), [gradient],
                  read_elsewhere(graph, loss))


def read_elsewhere(graph, loss, parameter_gradients=True):
    """Functions a pass writes that other passes, parts or the user read."""
    kept = [loss.per_sample]
    for node in graph.nodes:
        layer = node.layer
        kept += [*layer.parameters().values(), layer.result, layer.result_gradients]
        if parameter_gradients:
            kept += layer.gradients().values()
        kept += [layer.input_gradients_of(i) for i in range(len(node.inputs))]
    return kept
