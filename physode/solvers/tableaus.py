"""Butcher tableaus of the explicit Runge-Kutta methods physode ships.

Pure data. Rational coefficients are kept exact (``Fraction``) so that the
order conditions can be checked exactly in the tests.
"""

from __future__ import annotations

from fractions import Fraction as F

from . import dop853_coefficients as _dop853
from .tableau import ButcherTableau

EULER = ButcherTableau(name="euler", order=1, c=(0,), a=((),), b=(1,))

MIDPOINT = ButcherTableau(name="midpoint", order=2, c=(0, F(1, 2)), a=((), (F(1, 2),)), b=(0, 1))

HEUN = ButcherTableau(name="heun", order=2, c=(0, 1), a=((), (1,)), b=(F(1, 2), F(1, 2)))

RK4 = ButcherTableau(
    name="rk4",
    order=4,
    c=(0, F(1, 2), F(1, 2), 1),
    a=((), (F(1, 2),), (0, F(1, 2)), (0, 0, 1)),
    b=(F(1, 6), F(1, 3), F(1, 3), F(1, 6)),
)

# Heun's method with Euler embedded: the simplest 2(1) pair.
HEUN_EULER = ButcherTableau(
    name="heun_euler",
    order=2,
    c=(0, 1),
    a=((), (1,)),
    b=(F(1, 2), F(1, 2)),
    b_error=(F(1, 2) - 1, F(1, 2)),
    error_order=1,
)

# Heun's third-order method (Heun 1900): fixed step.
HEUN3 = ButcherTableau(
    name="heun3",
    order=3,
    c=(0, F(1, 3), F(2, 3)),
    a=((), (F(1, 3),), (0, F(2, 3))),
    b=(F(1, 4), 0, F(3, 4)),
)

# Bogacki & Shampine (1989), 3(2) with FSAL.
_BOSH3_B = (F(2, 9), F(1, 3), F(4, 9), 0)
_BOSH3_B_HAT = (F(7, 24), F(1, 4), F(1, 3), F(1, 8))
BOSH3 = ButcherTableau(
    name="bosh3",
    order=3,
    c=(0, F(1, 2), F(3, 4), 1),
    a=((), (F(1, 2),), (0, F(3, 4)), _BOSH3_B[:3]),
    b=_BOSH3_B,
    b_error=tuple(b - bh for b, bh in zip(_BOSH3_B, _BOSH3_B_HAT, strict=True)),
    error_order=2,
    fsal=True,
)

# Dormand & Prince (1980), 5(4) with FSAL.
_DOPRI5_B = (F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0)
_DOPRI5_B_HAT = (
    F(5179, 57600),
    0,
    F(7571, 16695),
    F(393, 640),
    F(-92097, 339200),
    F(187, 2100),
    F(1, 40),
)
# Shampine's (1986) fourth-order continuous extension, as in Hairer, Norsett &
# Wanner's DOPRI5: y(theta) = y0 + theta r2 + theta(1-theta) r3
#   + theta^2 (1-theta) r4 + theta^2 (1-theta)^2 r5.
_DOPRI5_D = (
    F(-12715105075, 11282082432),
    0,
    F(87487479700, 32700410799),
    F(-10690763975, 1880347072),
    F(701980252875, 199316789632),
    F(-1453857185, 822651844),
    F(69997945, 29380423),
)


def _dopri5_dense() -> tuple[tuple[F, ...], ...]:
    """Shampine's extension rewritten as power-series weights ``b_i(theta)``."""
    rows = []
    for i, (b, d) in enumerate(zip(_DOPRI5_B, _DOPRI5_D, strict=True)):
        e1, e7 = F(int(i == 0)), F(int(i == 6))
        r4 = 2 * b - e1 - e7
        rows.append((e1, 3 * b - 2 * e1 - e7 + d, -r4 - 2 * d, d))
    return tuple(rows)


DOPRI5 = ButcherTableau(
    name="dopri5",
    order=5,
    c=(0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1),
    a=(
        (),
        (F(1, 5),),
        (F(3, 40), F(9, 40)),
        (F(44, 45), F(-56, 15), F(32, 9)),
        (F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)),
        (F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)),
        _DOPRI5_B[:6],
    ),
    b=_DOPRI5_B,
    b_error=tuple(b - bh for b, bh in zip(_DOPRI5_B, _DOPRI5_B_HAT, strict=True)),
    error_order=4,
    fsal=True,
    dense=_dopri5_dense(),
)

# Tsitouras (2011), 5(4) with FSAL; coefficients as published (double precision).
_TSIT5_B = (
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
    0.0,
)
TSIT5 = ButcherTableau(
    name="tsit5",
    order=5,
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.897153057105493, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (
            5.86145544294642,
            -12.92096931784711,
            8.159367898576159,
            -0.071584973281401,
            -0.028269050394068383,
        ),
        _TSIT5_B[:6],
    ),
    b=_TSIT5_B,
    b_error=(
        0.0017800110522257773,
        0.0008164344596567463,
        -0.007880878010261994,
        0.1447110071732629,
        -0.5823571654525552,
        0.45808210592918686,
        -1.0 / 66.0,
    ),
    error_order=4,
    fsal=True,
    # The published interpolant (Tsitouras 2011), each b_i(theta) expanded
    # from its factored form into powers theta^1 .. theta^4.
    dense=(
        (1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216),
        (0.0, 0.13169999999999998, -0.2234, 0.1017),
        (0.0, 3.930296236894751, -5.941033872131505, 2.490627285651253),
        (0.0, -12.411077166933676, 30.338188630282318, -16.548102889244902),
        (0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928),
        (0.0, -27.896526289197286, 65.09189467479368, -34.87065786149661),
        (0.0, 1.5, -4.0, 2.5),
    ),
)

# Fehlberg's 1(2) pair (1969) as torchdiffeq ships it: the second-order solution is
# propagated, and the estimate is that of the first-order one (b_hat = (1/256, 255/256, 0),
# whose order-2 condition misses by only 1/512). The estimate is therefore far below the
# propagated solution's true error, so the global error ends well past the tolerance
# (about 1000x on a rotation); kept for code written against torchdiffeq.
FEHLBERG2 = ButcherTableau(
    name="fehlberg2",
    order=2,
    c=(0, F(1, 2), 1),
    a=((), (F(1, 2),), (F(1, 256), F(255, 256))),
    b=(F(1, 512), F(255, 256), F(1, 512)),
    b_error=(F(-1, 512), 0, F(1, 512)),
    error_order=1,
)

# Dormand & Prince 8(5,3) (DOP853): twelve stages and a thirteenth, f(t + h, y1), first
# same as last. ``b_error`` is the fifth-order estimate; the solver (dop853.py) combines it
# with the third-order one and adds the seventh-order dense output.
DOPRI8 = ButcherTableau(
    name="dopri8",
    order=8,
    c=_dop853.C[:13],
    a=_dop853.A[:13],
    b=(*_dop853.B, 0.0),
    b_error=(*_dop853.E5, 0.0),
    error_order=7,
    fsal=True,
)

ALL = {
    tab.name: tab
    for tab in (
        EULER,
        MIDPOINT,
        HEUN,
        HEUN3,
        RK4,
        HEUN_EULER,
        FEHLBERG2,
        BOSH3,
        DOPRI5,
        TSIT5,
        DOPRI8,
    )
}
