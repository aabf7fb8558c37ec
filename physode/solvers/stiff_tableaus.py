"""Coefficients of the stiff methods: pure data (double precision, as published).

- ``RADAU_IIA5``: the three-stage Radau IIA collocation method of order 5 (Hairer & Wanner,
  Solving ODEs II, section IV.8): L-stable and stiffly accurate (the last stage is the new
  solution), with Hairer's embedded third-order estimate
  ``err = (I - h gamma0 J)^{-1} gamma0 (h f0 + sum_i e_i Z_i)``, ``gamma0`` the inverse
  of the real eigenvalue of ``A^{-1}``, ``Z_i`` the stage increments.
- ``KVAERNO5``: Kvaerno's ESDIRK 5(4) (Kvaerno, BIT 44, 2004): seven stages, an explicit
  first stage, diagonal ``gamma = 0.26``, stiffly accurate (the last row is ``b``), so the
  last stage is the new solution and its slope the next step's first stage; L-stable.
- ``RODAS5P``: Steinebach's Rosenbrock-Wanner 5(4) method Rodas5P (BIT 63, 2023), in
  Hairer & Wanner's transformed form: eight stages, ``(I / (h gamma) - J) u_i =
  f(t + alpha_i h, y + sum_j a_ij u_j) + sum_j (c_ij / h) u_j + h gamma_i f_t``,
  ``y1 = y + sum_i m_i u_i``; L-stable. (The convergence tests show which of the pair is
  of fifth order: the one with the last stage.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DiagonallyImplicitTableau:
    """An ESDIRK method: ``a`` rows include the diagonal (``a[i][i] = gamma`` for i >= 1,
    ``a[0] = ()``); ``b_error`` is ``b - b_hat``."""

    name: str
    order: int
    error_order: int
    gamma: float
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...]

    @property
    def stages(self) -> int:
        return len(self.c)


@dataclass(frozen=True)
class RosenbrockTableau:
    """A Rosenbrock-Wanner method in the transformed form (see the module docstring);
    ``a``/``c`` strictly lower rows, ``m`` the solution weights, ``m_error`` the
    embedded solution's difference ``m - m_hat``."""

    name: str
    order: int
    error_order: int
    gamma: float
    alpha: tuple[float, ...]
    gammas: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    c: tuple[tuple[float, ...], ...]
    m: tuple[float, ...]
    m_error: tuple[float, ...]
    #: Rows ``d_r`` of the dense output ``y(t0 + theta h) = (1 - theta) y0 + theta (y1 +
    #: (1 - theta) (K_1 + theta (K_2 + theta K_3 ...)))``, ``K_r = sum_i d_ri u_i``;
    #: empty: cubic Hermite from the end values and slopes.
    dense: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True)
class CollocationTableau:
    """A fully implicit collocation method: nodes ``c``, the matrix ``a`` (its last row is
    ``b``: stiffly accurate), and the weights ``error_weights`` ``e_i`` of the stage
    increments in the embedded estimate (see ``RADAU_IIA5``)."""

    name: str
    order: int
    error_order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    error_weights: tuple[float, ...]


# fmt: off
_S6 = math.sqrt(6.0)
RADAU_IIA5 = CollocationTableau(
    name="radau5",
    order=5,
    error_order=3,
    c=((4 - _S6) / 10, (4 + _S6) / 10, 1.0),
    a=(
        ((88 - 7 * _S6) / 360, (296 - 169 * _S6) / 1800, (-2 + 3 * _S6) / 225),
        ((296 + 169 * _S6) / 1800, (88 + 7 * _S6) / 360, (-2 - 3 * _S6) / 225),
        ((16 - _S6) / 36, (16 + _S6) / 36, 1 / 9),
    ),
    error_weights=((-13 - 7 * _S6) / 3, (-13 + 7 * _S6) / 3, -1 / 3),
)

_K = 0.26
_K6 = (0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141,
       0.61943039072480676)
_K7 = (0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046,
       0.62993304899016403, 0.06962479448202728)
KVAERNO5 = DiagonallyImplicitTableau(
    name="kvaerno5",
    order=5,
    error_order=4,
    gamma=_K,
    c=(0.0, 0.52, 1.230333209967908, 0.8957659843500759, 0.43639360985864756, 1.0, 1.0),
    a=(
        (),
        (_K, _K),
        (0.13, 0.84033320996790809, _K),
        (0.22371961478320505, 0.47675532319799699, -0.06470895363112615, _K),
        (0.16648564323248321, 0.10450018841591720, 0.03631482272098715,
         -0.13090704451073998, _K),
        (*_K6, _K),
        (*_K7, _K),
    ),
    b=(*_K7, _K),
    # b - b_hat, b_hat = the sixth row (with its diagonal), itself stiffly accurate.
    b_error=tuple(b7 - b6 for b7, b6 in zip((*_K7, _K), (*_K6, _K, 0.0), strict=True)),
)

_R_LAST = (-7.502846399306121, 2.561846144803919, -11.627539656261098,
           -0.18268767659942256, 0.030198172008377946)
RODAS5P = RosenbrockTableau(
    name="rodas5p",
    order=5,
    error_order=4,
    gamma=0.21193756319429014,
    alpha=(0.0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716,
           0.4288403609558664, 1.0, 1.0, 1.0),
    gammas=(0.21193756319429014, -0.42387512638858027, -0.3384627126235924,
            1.8046452872882734, 2.325825639765069, 0.0, 0.0, 0.0),
    a=(
        (),
        (3.0,),
        (2.849394379747939, 0.45842242204463923),
        (-6.954028509809101, 2.489845061869568, -10.358996098473584),
        (2.8029986275628964, 0.5072464736228206, -0.3988312541770524, -0.04721187230404641),
        _R_LAST,
        (*_R_LAST, 1.0),
        (*_R_LAST, 1.0, 1.0),
    ),
    c=(
        (),
        (-14.155112264123755,),
        (-17.97296035885952, -2.859693295451294),
        (147.12150275711716, -1.41221402718213, 71.68940251302358),
        (165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306),
        (24.854864614690072, -3.0009227002832186, 47.4931110020768, 5.5814197821558125,
         -0.6610691825249471),
        (30.91273214028599, -3.1208243349937974, 77.79954646070892, 34.28646028294783,
         -19.097331116725623, -28.087943162872662),
        (37.80277123390563, -3.2571969029072276, 112.26918849496327, 66.9347231244047,
         -40.06618937091002, -54.66780262877968, -9.48861652309627),
    ),
    # The fifth-order solution takes all eight stages; the embedded fourth-order one is
    # the last stage's argument (without u_8), so the estimate is u_8 itself.
    m=(*_R_LAST, 1.0, 1.0, 1.0),
    m_error=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    # Steinebach's fourth-order dense output (stiffly accurate in theta).
    dense=(
        (25.948786856663858, -2.5579724845846235, 10.433815404888879, -2.3679251022685204,
         0.524948541321073, 1.1241088310450404, 0.4272876194431874, -0.17202221070155493),
        (-9.91568850695171, -0.9689944594115154, 3.0438037242978453, -24.495224566215796,
         20.176138334709044, 15.98066361424651, -6.789040303419874, -6.710236069923372),
        (11.419903575922262, 2.8879645146136994, 72.92137995996029, 80.12511834622643,
         -52.072871366152654, -59.78993625266729, -0.15582684282751913, 4.883087185713722),
    ),
)
# fmt: on
