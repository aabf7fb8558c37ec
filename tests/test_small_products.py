"""The solver's own small products: equal to BLAS, and kept off it on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from physode.solvers.small import SMALL_STATE, combine, dot


@pytest.mark.parametrize("n", [1, 18, SMALL_STATE, SMALL_STATE + 1, 5000])
def test_combine_and_dot_equal_blas(n):
    g = torch.Generator().manual_seed(n)
    y0 = torch.randn(1, n, dtype=torch.float64, generator=g)
    w = torch.randn(4, 7, dtype=torch.float64, generator=g)
    v = torch.randn(7, n, dtype=torch.float64, generator=g)
    torch.testing.assert_close(combine(y0, w, v), torch.addmm(y0, w, v), rtol=1e-14, atol=1e-13)
    a, b = v[0], v[1]
    torch.testing.assert_close(dot(a, b), torch.dot(a, b), rtol=1e-13, atol=1e-13)


def test_combine_is_differentiable_in_float64():
    y0 = torch.randn(1, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64)
    v = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y, vv: combine(y, w, vv), (y0, v))


_SOLVE = """
import torch, physode
y0 = torch.randn(1, 18, dtype=torch.float64)
t = torch.linspace(0, 1, 50, dtype=torch.float64)
physode.odeint(lambda t, y: -y, y0, t, method="dopri5", rtol=1e-8, atol=1e-8)
physode.odeint(lambda t, y: -y, y0, t, method="alf", rtol=1e-6, atol=1e-8)
"""


@pytest.mark.skipif("mkl" not in torch.__config__.show().lower(), reason="needs MKL as BLAS")
def test_small_solve_calls_no_blas():
    """MKL_VERBOSE logs every BLAS call: a small solve whose ``func`` uses none makes none."""
    env = dict(os.environ, MKL_VERBOSE="1")
    done = subprocess.run(
        [sys.executable, "-c", _SOLVE], env=env, capture_output=True, text=True, check=True
    )
    calls = [line for line in (done.stdout + done.stderr).splitlines() if "MKL_VERBOSE D" in line]
    assert calls == []
