"""Butcher tableaus: Runge-Kutta order conditions, embedded pairs and dense output.

Rational tableaus are checked exactly with ``Fraction``; tsit5 and dopri8 (published in
double precision) to 1e-12. The trees here go up to order 5: dopri8's higher orders are
shown by convergence in test_methods.py.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from physode.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS
from physode.solvers.tableaus import ALL

NAMES = sorted(ALL)
ADAPTIVE = sorted(name for name, tab in ALL.items() if tab.adaptive)
# Pairs whose b_error is one embedded solution of order error_order (dopri8 combines two).
EMBEDDED = [name for name in ADAPTIVE if name != "dopri8"]
FLOAT_TOL = 1e-12


def _is_exact(x) -> bool:
    return isinstance(x, int | Fraction)


def _tableau_is_exact(tab) -> bool:
    entries = [*tab.c, *tab.b, *(x for row in tab.a for x in row)]
    if tab.b_error is not None:
        entries += list(tab.b_error)
    if tab.dense is not None:
        entries += [x for row in tab.dense for x in row]
    return all(_is_exact(x) for x in entries)


def _full_a(tab):
    s = tab.stages
    return [list(row) + [0] * (s - len(row)) for row in tab.a]


def _matvec(a, v):
    return [sum(a[i][j] * v[j] for j in range(len(v))) for i in range(len(a))]


def _mul(u, v):
    return [x * y for x, y in zip(u, v, strict=True)]


def _dot(u, v):
    return sum(x * y for x, y in zip(u, v, strict=True))


def elementary_weights(tab) -> dict[int, list[tuple[list, Fraction]]]:
    """For every rooted tree up to order 5: (Phi_i vector over the stages, 1/gamma)."""
    a, c = _full_a(tab), list(tab.c)
    one = [1] * tab.stages
    c2, c3, c4 = _mul(c, c), _mul(_mul(c, c), c), _mul(_mul(c, c), _mul(c, c))
    ac = _matvec(a, c)
    ac2 = _matvec(a, c2)
    aac = _matvec(a, ac)
    return {
        1: [(one, Fraction(1))],
        2: [(c, Fraction(1, 2))],
        3: [(c2, Fraction(1, 3)), (ac, Fraction(1, 6))],
        4: [
            (c3, Fraction(1, 4)),
            (_mul(c, ac), Fraction(1, 8)),
            (ac2, Fraction(1, 12)),
            (aac, Fraction(1, 24)),
        ],
        5: [
            (c4, Fraction(1, 5)),
            (_mul(c2, ac), Fraction(1, 10)),
            (_mul(c, ac2), Fraction(1, 15)),
            (_mul(c, aac), Fraction(1, 30)),
            (_mul(ac, ac), Fraction(1, 20)),
            (_matvec(a, c3), Fraction(1, 20)),
            (_matvec(a, _mul(c, ac)), Fraction(1, 40)),
            (_matvec(a, ac2), Fraction(1, 60)),
            (_matvec(a, aac), Fraction(1, 120)),
        ],
    }


def condition_residuals(tab, weights, order: int, scale=1) -> list:
    """``sum_i w_i Phi_i - scale / gamma`` for every tree of exactly ``order``."""
    return [
        _dot(weights, phi) - scale * inv_gamma for phi, inv_gamma in elementary_weights(tab)[order]
    ]


def _holds(tab, residual) -> bool:
    if _tableau_is_exact(tab):
        return residual == 0
    return abs(residual) <= FLOAT_TOL


def _b_hat(tab):
    return [b - e for b, e in zip(tab.b, tab.b_error, strict=True)]


def test_rational_tableaus_are_exact():
    # Everything except tsit5 is published with rational coefficients and
    # must be stored exactly, or the exact checks below would be vacuous.
    exact = {name for name, tab in ALL.items() if _tableau_is_exact(tab)}
    assert exact == set(ALL) - {"tsit5", "dopri8"}


def test_method_registry():
    assert set(FIXED_STEP_METHODS) == {"euler", "midpoint", "heun", "heun3", "rk4", "ab4", "abm4"}
    assert set(ADAPTIVE_METHODS) == {
        "heun_euler",
        "fehlberg2",
        "bosh3",
        "dopri5",
        "tsit5",
        "dopri8",
        "alf",
        "radau5",
        "kvaerno5",
        "rodas5p",
    }
    assert {name: tab.order for name, tab in ALL.items()} == {
        "euler": 1,
        "midpoint": 2,
        "heun": 2,
        "heun3": 3,
        "rk4": 4,
        "heun_euler": 2,
        "fehlberg2": 2,
        "bosh3": 3,
        "dopri5": 5,
        "tsit5": 5,
        "dopri8": 8,
    }
    assert {name: ALL[name].error_order for name in ADAPTIVE} == {
        "heun_euler": 1,
        "fehlberg2": 1,
        "bosh3": 2,
        "dopri5": 4,
        "tsit5": 4,
        "dopri8": 7,
    }


@pytest.mark.parametrize("name", NAMES)
def test_nodes_are_row_sums(name):
    tab = ALL[name]
    assert tab.c[0] == 0
    for i, row in enumerate(tab.a):
        assert _holds(tab, tab.c[i] - sum(row)), (i, tab.c[i], sum(row))


@pytest.mark.parametrize("name", NAMES)
def test_b_satisfies_order_conditions(name):
    tab = ALL[name]
    for order in range(1, min(tab.order, 5) + 1):
        for k, r in enumerate(condition_residuals(tab, list(tab.b), order)):
            assert _holds(tab, r), f"{name}: order-{order} condition #{k} off by {float(r):.3g}"


@pytest.mark.parametrize("name", [n for n in NAMES if ALL[n].order < 5])
def test_b_order_is_not_understated(name):
    # A declared order p must be the true one: some condition of order p+1 fails.
    tab = ALL[name]
    residuals = condition_residuals(tab, list(tab.b), tab.order + 1)
    assert any(not _holds(tab, r) for r in residuals)


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_weights_have_error_order(name):
    tab = ALL[name]
    b_hat = _b_hat(tab)
    for order in range(1, tab.error_order + 1):
        for k, r in enumerate(condition_residuals(tab, b_hat, order)):
            assert _holds(tab, r), f"{name} b_hat: order-{order} condition #{k} off by {r}"


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_weights_are_a_genuine_lower_order_estimate(name):
    tab = ALL[name]
    residuals = condition_residuals(tab, _b_hat(tab), tab.error_order + 1)
    # Clearly violated, not a round-off miss: the estimate must differ from b at order p_hat+1.
    assert max(abs(float(r)) for r in residuals) > 1e-5
    assert tab.error_order < tab.order


@pytest.mark.parametrize("name", [n for n in NAMES if ALL[n].fsal])
def test_fsal_last_stage_is_the_new_solution(name):
    # The RK step returns the last stage's argument as y1 for FSAL tableaus:
    # that needs a[-1] == b[:-1], b[-1] == 0 and c[-1] == 1.
    tab = ALL[name]
    assert tab.c[-1] == 1
    assert tab.b[-1] == 0
    for a_last, b in zip(tab.a[-1], tab.b[:-1], strict=True):
        assert _holds(tab, a_last - b)


@pytest.mark.parametrize("name", [n for n in NAMES if ALL[n].dense is not None])
def test_dense_output_at_theta_one_is_b(name):
    tab = ALL[name]
    for i, (row, b) in enumerate(zip(tab.dense, tab.b, strict=True)):
        assert abs(float(sum(row) - b)) <= FLOAT_TOL, (i, float(sum(row)), float(b))
        if _tableau_is_exact(tab):
            assert sum(row) == b


@pytest.mark.parametrize("name", [n for n in NAMES if ALL[n].dense is not None])
@pytest.mark.parametrize("theta", [Fraction(1, 5), Fraction(1, 2), Fraction(3, 4), Fraction(9, 10)])
def test_dense_output_is_fourth_order_continuous_extension(name, theta):
    # b_i(theta) must satisfy sum_i b_i(theta) Phi_i(tree) = theta^|tree| / gamma(tree)
    # for every tree up to order 4 (Shampine's and Tsitouras' interpolants are
    # fourth order), and must fail some fifth-order one for interior theta.
    tab = ALL[name]
    th = theta if _tableau_is_exact(tab) else float(theta)
    weights = [sum(d * th ** (p + 1) for p, d in enumerate(row)) for row in tab.dense]
    for order in range(1, 5):
        for k, r in enumerate(condition_residuals(tab, weights, order, scale=th**order)):
            assert _holds(tab, r), f"{name}(theta={theta}) order-{order} #{k}: {float(r):.3g}"
    fifth = condition_residuals(tab, weights, 5, scale=th**5)
    assert max(abs(float(r)) for r in fifth) > 1e-6


@pytest.mark.parametrize(("estimate", "order"), [("E5", 5), ("E3", 3)])
def test_dopri8_estimates_are_fifth_and_third_order(estimate, order):
    # b - E5 is a fifth-order solution and b - E3 a third-order one (Hairer's bhh):
    # every condition up to their order holds, and one of the next order clearly fails.
    from physode.solvers import dop853_coefficients as coef

    tab = ALL["dopri8"]
    b_hat = [b - e for b, e in zip(tab.b, (*getattr(coef, estimate), 0.0), strict=True)]
    for p in range(1, order + 1):
        for k, r in enumerate(condition_residuals(tab, b_hat, p)):
            assert abs(r) <= FLOAT_TOL, (estimate, p, k, r)
    if order < 5:
        assert max(abs(r) for r in condition_residuals(tab, b_hat, order + 1)) > 1e-5
