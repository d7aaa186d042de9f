"""The OT wrapper of DLFD: values and gradients against closed forms, solvers against each other."""

from __future__ import annotations

import math

import ot
import pytest
import torch

from unlearn_pl.losses import cosine_cost, ot_distance

METHODS = ("emd", "sinkhorn")


def cosine_distance_grad(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂/∂x (1 − x·y / (|x||y|)), by hand."""
    nx, ny = x.norm(), y.norm()
    return -(y / (nx * ny) - (x @ y) * x / (nx**3 * ny))


@pytest.mark.parametrize("method", METHODS)
def test_single_points_value_and_gradient(method: str) -> None:
    # With one point on each side the only plan moves all mass from x to y: OT = cost(x, y).
    x = torch.tensor([[0.3, -1.2, 2.0, 0.5]], requires_grad=True)
    y = torch.tensor([[1.0, 0.4, -0.7, 2.2]])
    distance = ot_distance(x, y, method=method)
    (grad,) = torch.autograd.grad(distance, x)
    expected = 1 - torch.nn.functional.cosine_similarity(x, y).squeeze()
    torch.testing.assert_close(distance, expected.detach())
    torch.testing.assert_close(grad[0], cosine_distance_grad(x[0].detach(), y[0]))


@pytest.mark.parametrize("method", METHODS)
def test_permutation_plan_gradient(method: str) -> None:
    # x_i is a slightly rotated copy of y_perm[i]; the y's are far apart in angle, so the optimal
    # plan is the permutation with mass 1/n on each matched pair.
    n, perm = 4, torch.tensor([2, 0, 3, 1])
    generator = torch.Generator().manual_seed(0)
    y = torch.linalg.qr(torch.randn(6, 6, generator=generator))[0][:n] * 3.0  # orthogonal rows
    x = (y[perm] + 0.05 * torch.randn(n, 6, generator=generator)).requires_grad_(True)
    distance = ot_distance(x, y, method=method)
    (grad,) = torch.autograd.grad(distance, x)
    x0 = x.detach()
    matched = torch.stack([1 - torch.dot(x0[i], y[perm[i]]) / (x0[i].norm() * y[perm[i]].norm())
                           for i in range(n)])
    torch.testing.assert_close(distance, matched.mean(), rtol=1e-4, atol=1e-5)
    expected = torch.stack([cosine_distance_grad(x0[i], y[perm[i]]) for i in range(n)]) / n
    torch.testing.assert_close(grad, expected, rtol=1e-3, atol=1e-5)


def test_sinkhorn_approaches_emd_for_small_epsilon() -> None:
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 5, generator=generator), torch.randn(9, 5, generator=generator)
    exact = ot_distance(x, y, method="emd")
    entropic = ot_distance(x, y, method="sinkhorn", epsilon=0.005, max_iter=500)
    loose = ot_distance(x, y, method="sinkhorn", epsilon=0.5, max_iter=500)
    assert exact > 0.3
    torch.testing.assert_close(entropic, exact, rtol=0.02, atol=0.0)
    # ⟨P_ε, C⟩ ≥ ⟨P*, C⟩ and the gap grows with ε: the comparison above is not vacuous.
    assert loose - exact > 5 * abs(entropic - exact)


def test_separated_sets_do_not_collapse_to_zero() -> None:
    # Costs near 2 with ε = 0.01: exp(−C/ε) = exp(−200) underflows in float32, which is what
    # makes plain Sinkhorn (and the authors' solver) return ~0. The log domain must not.
    x = torch.tensor([[1.0, 0.1], [1.0, -0.1], [1.0, 0.0]])
    y = -x
    distance = ot_distance(x, y, method="sinkhorn", epsilon=0.01, max_iter=50)
    assert distance > 1.9
    torch.testing.assert_close(distance, ot_distance(x, y, method="emd"), rtol=0.01, atol=0.0)
    uniform = torch.full((3,), 1 / 3)
    with pytest.warns(UserWarning):
        plain = ot.sinkhorn2(uniform, uniform, cosine_cost(x, y), reg=0.01, numItermax=50)
    assert not plain > 0.5  # the failure this wrapper exists to avoid (0 or NaN)


@pytest.mark.parametrize("method", METHODS)
def test_bf16_autocast_returns_float32(method: str) -> None:
    generator = torch.Generator().manual_seed(2)
    x32 = torch.randn(8, 16, generator=generator)
    y32 = torch.randn(6, 16, generator=generator)
    x = x32.bfloat16().requires_grad_(True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        distance = ot_distance(x, y32.bfloat16(), method=method)
    assert distance.dtype == torch.float32
    (grad,) = torch.autograd.grad(distance, x)
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad.float()).all()
    assert grad.abs().sum() > 0
    reference = ot_distance(x32.bfloat16().float(), y32.bfloat16().float(), method=method)
    torch.testing.assert_close(distance, reference)


def test_unequal_batches_and_errors() -> None:
    x, y = torch.randn(5, 3), torch.randn(2, 3)
    assert math.isfinite(float(ot_distance(x, y, method="emd")))
    with pytest.raises(ValueError, match="non-empty"):
        ot_distance(torch.randn(0, 3), y)
    with pytest.raises(ValueError, match="method"):
        ot_distance(x, y, method="plain")  # type: ignore[arg-type]
