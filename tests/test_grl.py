import pytest
import torch

from dann import GradientReversal, grad_reverse


@pytest.mark.parametrize("lambda_", [1.0, 0.5, 2.0, 0.1, -1.0])
def test_gradient_is_exactly_minus_lambda_times_upstream(lambda_):
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, 3, dtype=torch.float64)
    grad_reverse(x, lambda_).backward(upstream)
    assert torch.equal(x.grad, -lambda_ * upstream)


def _reversed_map(lambda_):
    """Forward value ``-lambda * t`` but every gradient flows through the reversal layer alone.

    gradcheck compares autograd with finite differences of the forward, so this passes exactly
    when the layer's backward is multiplication by ``-lambda``.
    """

    def f(t):
        through_layer = grad_reverse(t, lambda_)
        return (-lambda_ * t).detach() + through_layer - through_layer.detach()

    return f


@pytest.mark.parametrize("lambda_", [1.0, 0.3, 5.0, 0.0])
def test_gradcheck_in_float64(lambda_):
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_reversed_map(lambda_), (x,))


def test_gradcheck_fails_for_the_plain_layer():
    # The layer must NOT look like the identity to gradcheck: its gradient is reversed.
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert not torch.autograd.gradcheck(lambda t: grad_reverse(t, 1.0), (x,), raise_exception=False)


def test_lambda_zero_blocks_gradient_even_for_inf_upstream():
    x = torch.randn(5, requires_grad=True)
    grad_reverse(x, 0.0).backward(torch.full((5,), float("inf")))
    assert torch.equal(x.grad, torch.zeros(5))


def test_forward_is_identity_without_copy():
    x = torch.randn(2, 3, 4, dtype=torch.float16)
    y = grad_reverse(x, 0.7)
    assert torch.equal(x, y)
    assert y.dtype == x.dtype and y.device == x.device and y.shape == x.shape
    assert y.data_ptr() == x.data_ptr()


def test_module_uses_lambda_set_per_step_and_reaches_parameters_upstream():
    linear = torch.nn.Linear(3, 3)
    grl = GradientReversal()
    x = torch.randn(8, 3)
    grads = []
    for lambda_ in (0.0, 0.5, 1.0):
        linear.zero_grad()
        grl.lambda_ = lambda_
        grl(linear(x)).sum().backward()
        grads.append(linear.weight.grad.clone())
    plain = torch.autograd.grad(linear(x).sum(), linear.weight)[0]
    assert torch.equal(grads[0], torch.zeros_like(plain))
    assert torch.allclose(grads[1], -0.5 * plain)
    assert torch.allclose(grads[2], -plain)
    assert "lambda_=1.0" in repr(grl)
