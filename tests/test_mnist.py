"""Example 6.2 on the real MNIST: 15 epochs, lr 0.5, n_b 100, validation every 100."""

import numpy as np
import pytest

import fastbp


def test_mnist_loader_shapes_and_ranges(mnist):
    Xtr, ytr, Xte, yte = mnist
    assert Xtr.shape == (60000, 784) and Xte.shape == (10000, 784)
    assert Xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert 0 <= Xtr.min() and Xtr.max() == 1
    assert sorted(np.unique(ytr).tolist()) == list(range(10))
    assert np.mean(Xtr == 0) > 0.75  # MNIST is mostly black pixels


@pytest.mark.slow
@pytest.mark.parametrize("sizes,limit", [([784, 10], 0.085), ([784, 200, 10], 0.021)],
                         ids=["logistic-regression", "two-layer-relu"])
def test_example_6_2(mnist, sizes, limit):
    Xtr, ytr, Xte, yte = mnist
    net = fastbp.Network(sizes, activation="relu", seed=0)
    hist = fastbp.train(net, Xtr, ytr, lr=0.5, batch_size=100, epochs=15,
                        validation=(Xte, yte), eval_every=100, seed=0, device="cpu")
    assert hist.iterations == 9000 and len(hist.val_error) == 90
    test_error = float(np.mean(net.predict(Xte) != yte))
    print(f"\nExample 6.2 {sizes}: test error {test_error:.2%}, "
          f"{np.median(hist.epoch_seconds):.2f} s/epoch")
    assert test_error <= limit
    assert hist.val_error[-1] == pytest.approx(test_error)
