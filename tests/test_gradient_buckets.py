"""Gradient buckets: every gradient in one bucket, each bucket started after the
part of the backward pass that finishes its last gradient, the sums copied back."""

import numpy as np
import pytest

from devito_ml import BatchNorm, Conv, Flat, FullyConnected, Net, ReLU
from devito_ml.gradient_buckets import GradientBuckets, finishing_parts


class _OneRankMPI:
    """Enough of ``mpi4py.MPI`` for one rank: a sum over one rank is the value."""

    IN_PLACE, SUM = object(), 'sum'

    class Request:
        @staticmethod
        def Testall(requests):
            return True

        @staticmethod
        def Waitall(requests):
            return None


class _Recorder:
    """A communicator of one rank that records when each bucket starts."""

    def __init__(self):
        self.started, self.parts_run = [], 0

    def Dup(self):
        return self

    def Iallreduce(self, in_place, buffer, op):
        self.started.append((self.parts_run, buffer.copy()))


def six_part_net():
    layers = [Conv((4, 3, 3), padding=1, bias=False), BatchNorm(activation=ReLU()),
              Conv((4, 3, 3), padding=1), Flat(), FullyConnected(8, activation=ReLU()),
              FullyConnected(3)]
    return Net(layers, batch_size=4, input_shape=(2, 6, 6), dtype=np.float64, seed=1,
               layers_per_operator=2)


@pytest.fixture(scope='module')
def net():
    return six_part_net()


def test_the_last_layers_gradients_are_final_first(net):
    chain = net.backward_operator_for(None, True)
    finished = finishing_parts(net, chain)
    assert sorted(finished) == sorted(net.gradients())
    assert [part.name for part in chain.parts] == [f"net_backward_{i}"
                                                   for i in range(6, 0, -1)]
    assert finished == {'fc2_W': 1, 'fc2_b': 1, 'fc1_W': 2, 'fc1_b': 2, 'conv2_W': 4,
                        'conv2_b': 4, 'bn1_W': 5, 'bn1_b': 5, 'conv1_W': 6}


@pytest.mark.parametrize('bucket_bytes', [1, 600, 1 << 20])
def test_buckets_hold_every_gradient_once_in_the_order_they_finish(net, bucket_bytes):
    buckets = GradientBuckets(net, net.backward_operator_for(None, True), _Recorder(),
                              _OneRankMPI, bucket_bytes)
    names = [name for _, members, _ in buckets.buckets for name in members]
    assert sorted(names) == sorted(net.gradients())
    starts = [at for at, _, _ in buckets.buckets]
    assert starts == sorted(starts)
    for _, members, buffer in buckets.buckets:
        assert len(members) == 1 or buffer.nbytes <= bucket_bytes
    if bucket_bytes == 1:
        assert len(buckets.buckets) == len(net.gradients())
    if bucket_bytes == 1 << 20:
        assert len(buckets.buckets) == 1 and starts == [6]


def test_each_bucket_starts_when_its_gradients_are_final_and_comes_back_scaled():
    net = six_part_net()
    comm = _Recorder()
    buckets = GradientBuckets(net, net.backward_operator_for(None, True), comm,
                              _OneRankMPI, bucket_bytes=600)
    x = np.random.default_rng(0).standard_normal((4, 2, 6, 6))
    net.forward(x)

    def after_part(parts_run):
        comm.parts_run = parts_run
        buckets.after_part(parts_run)
    buckets.begin(scale=0.25)
    net.backward(np.array([0, 1, 2, 0]), after_part=after_part)
    computed = {name: value.copy() for name, value in net.gradients().items()}
    buckets.finish()
    assert [parts_run for parts_run, _ in comm.started] == \
        [at for at, _, _ in buckets.buckets]
    for (_, members, _), (_, sent) in zip(buckets.buckets, comm.started):
        expected = np.concatenate([computed[name].ravel() * 0.25 for name in members])
        np.testing.assert_array_equal(sent, expected)
    for name, value in net.gradients().items():
        np.testing.assert_array_equal(value, computed[name] * 0.25)
