r"""Microscopic chains coarse-grained to mesoscopic fields: FPUT, FENE and a dissipative chain.

Data where no exact mesoscopic equation is known (REFERENCE.md, "Data protocols of the paper").

**Hamiltonian chains** (:func:`fput_chain`, :func:`fene_chain`). ``N`` particles on a ring with
displacements :math:`q_n`, momenta :math:`p_n` (unit masses) and bond strains
:math:`r_n = q_{n+1} - q_n` (indices mod ``N``), bond potential :math:`\Phi`:

.. math::

    H = \sum_n \tfrac12 p_n^2 + \Phi(r_n), \qquad
    \dot p_n = \Phi'(r_n) - \Phi'(r_{n-1}), \qquad \dot r_n = p_{n+1} - p_n,

so that :math:`\ddot r_n = \Phi'(r_{n+1}) - 2\Phi'(r_n) + \Phi'(r_{n-1})`. FPUT:
:math:`\Phi(r) = c^2 r^2/2 + \alpha r^3/3`, i.e. the strain equation
:math:`\ddot r_n = c^2(r_{n+1} - 2r_n + r_{n-1}) + \alpha(r_{n+1}^2 - 2r_n^2 + r_{n-1}^2)`, with
:math:`c = 24 b`, :math:`\alpha = a c` for the KdV coefficients of
:math:`u_\tau + a u u_\xi + b u_{\xi\xi\xi} = 0` (its formal limit in the scaling below; the
lattice's own dispersion gives :math:`b = c/24`). FENE:
:math:`\Phi(r) = -\tfrac12 H R^2 \log(1 - r^2/R^2)`, tension :math:`H r / (1 - (r/R)^2)`,
:math:`H = c^2`, :math:`R = 50\varepsilon^2`. Both are integrated with Störmer–Verlet (velocity
Verlet in :math:`(q, p)`, written in strains: half kick, drift, half kick): symplectic,
time-reversible, second order, conserving :math:`\sum r_n` and :math:`\sum p_n` to round-off and
:math:`H` to :math:`O(\Delta t^2)` without drift.

**The paper's protocol** (REFERENCE.md, "Protocol details fixed by the paper's public code"), the
defaults here: ``a = 1``, ``b = 1/24`` (so :math:`c = 1`, :math:`\alpha = 1`, :math:`H = 1`);
``N = 128`` (FPUT) / ``209`` (FENE) particles on :math:`L = 2\pi`; a slow-time step
``slow_dt`` (``1e-3`` FPUT, ``5e-4`` FENE) of ``substeps = 50`` lab-time Verlet steps
(:math:`\Delta t = \text{slow\_dt}/(\varepsilon^3\,\text{substeps})`: :math:`c\Delta t = 0.169` /
``0.368``), frames every ``frame_dt`` (``1e-2`` / ``5e-3``, 10 slow steps) up to ``t_end``
(``1`` / ``0.25``: 101 / 51 frames; REFERENCE.md gives FENE both "T = 0.5" and "51 frames" at
5e-3, which disagree: femeso takes the frame count). Rejection: an FPUT sample with
:math:`\max_n |r_n|/\varepsilon^2 > 20` at a saved frame (or a non-finite value), a FENE sample
with :math:`\max_n |r_n|/R > 0.9` at any Verlet step (:class:`RejectedSampleError`,
:class:`BondBreakError` for FENE; the dataset generator draws a new initial condition from the
same trajectory's random stream and records how often it did).

Scaling (co-moving slow frame): :math:`\varepsilon = L_x / N`, :math:`r_n(t) = \varepsilon^2
u(\xi, \tau)` with :math:`\xi = \varepsilon(n - c t)`, :math:`\tau = \varepsilon^3 t`. Initial
condition: :math:`u_0` a sum of 3 sine modes (3 *distinct* random integer wavenumbers in
``1..max_wavenumber``, 6 in the paper, amplitudes :math:`U(0,1)`, phases :math:`U(0, 2\pi)`),
centred and scaled to standard deviation ``amplitude`` (1 in the paper) over the particles, and
strain velocities of the right-travelling wave :math:`\dot r_n(0) = -c\varepsilon^3
u_0'(\varepsilon n)` (spectral derivative, exact for the profile); the momenta are their
discrete antiderivative with zero total momentum.

**Dissipative chain** (:func:`dissipative_chain`). Overdamped particles with friction
:math:`\gamma`, temperature :math:`k_B T` and the same bond geometry, in particles
:math:`\gamma\,dq_n = (\Phi'(r_n) - \Phi'(r_{n-1}))\,dt + \sqrt{2\gamma k_B T}\,dW_n`, i.e.
in strains

.. math:: dr_n = \gamma^{-1}\,(\Delta \Phi'(r))_n\,dt + \sqrt{2 k_B T/\gamma}\,(dW_{n+1} - dW_n),

a discrete :math:`H^{-1}` gradient flow of the bond energy :math:`E = \sum_n \Phi(r_n)` (plus
conserved noise): :math:`\sum r_n` (the total length, "mass") is conserved exactly up to round-off
and, at zero temperature, :math:`dE/dt = -\gamma^{-1}\sum_n (\Phi'(r_{n+1}) - \Phi'(r_n))^2 \le 0`.
Euler–Maruyama with a state-dependent stable step :math:`\Delta t \le \text{courant}\,\gamma /
(4 \max_n|\Phi''(r_n)|)`; at zero temperature a step that would raise :math:`E` (in floating
point) is halved until it does not, so the saved energies never increase. Diffusive scaling
:math:`r_n = u(\xi_n, \tau)`, :math:`\xi_n = \varepsilon n`, :math:`\tau = \varepsilon^2 t`, so
that the formal limit is :math:`u_\tau = \gamma^{-1}\partial_\xi^2 \Phi'(u)`; at positive
temperature no closed mesoscopic equation is known.

**Coarse-graining** (:func:`coarse_grain_to_mesh`, :meth:`ChainTrajectory.mesoscopic_grid`), as
in the paper: the chain values, scaled, sit at the slow positions :math:`\xi_n = \varepsilon n
- s` (:math:`s = \varepsilon c t`, modulo :math:`L`); their periodic **piecewise-linear**
interpolant (``numpy.interp(x, xi, u, period=L)``) is evaluated at the vertices of
``PeriodicIntervalMesh(n_points, L)`` and put into P1 exactly at the vertices. A piecewise-linear
strain profile is reproduced exactly. The mesh field's mass :math:`\int u_h\,d\xi` (trapezoidal
rule at the vertices) equals the chain's :math:`\varepsilon\sum_n r_n/\text{scale}` exactly for
any shift when ``n_points`` is a multiple of ``N`` (each particle then carries the total weight
``n_points / N`` of the interpolation: FPUT's 128 particles on 256 points); otherwise up to the
interpolation's aliasing (FENE's 209 particles on 256 points: relative changes of the mass along
a trajectory ~1e-5 of max |u|).

:func:`generate_chain_dataset` writes a :class:`femeso.data.Dataset` (with ``"grid"`` metadata, so
:func:`femeso.data.to_grid_arrays` returns the ``(trajectories, times, n_points)`` array).
Trajectory ``i`` depends only on ``(seed, i)`` and the parameters (its random stream is child
``i`` of ``numpy.random.SeedSequence(seed)``), not on the number of trajectories, the batch size
or the number of MPI ranks; the chains are shared out over the ranks of ``comm`` and the results
gathered.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import firedrake as fd
import numpy as np

from femeso._log import logger, progress_bar
from femeso.data.io import grid_index
from femeso.data.trajectories import Dataset, TrajectoryData, mesh_of

__all__ = [
    "BondBreakError",
    "ChainTrajectory",
    "DoubleWellBond",
    "FENEBond",
    "FPUTBond",
    "QuarticBond",
    "RejectedSampleError",
    "coarse_grain_to_mesh",
    "dissipative_chain",
    "fene_chain",
    "fput_chain",
    "generate_chain_dataset",
    "random_sine_profile",
    "stormer_verlet",
]

TWO_PI = 2.0 * math.pi


class RejectedSampleError(ValueError):
    """A chain sample that the paper's protocol rejects (FPUT: max |u| > 20 at a frame)."""


class BondBreakError(RejectedSampleError):
    """A chain's strain reached its bonds' rejection limit (FENE: 0.9 R) or maximal extension R."""


# --------------------------------------------------------------------------------------------
# bond potentials
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FPUTBond:
    r"""FPUT bond :math:`\Phi(r) = k r^2/2 + \alpha r^3/3` (``k = c**2``)."""

    stiffness: float
    alpha: float
    max_strain = None

    def potential(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\Phi(r)`."""
        return (0.5 * self.stiffness + (self.alpha / 3.0) * r) * r * r

    def tension(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\Phi'(r)`."""
        return (self.stiffness + self.alpha * r) * r

    def curvature(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\Phi''(r)`."""
        return self.stiffness + 2.0 * self.alpha * r


@dataclass(frozen=True)
class FENEBond:
    r"""FENE bond :math:`\Phi(r) = -\tfrac12 H R^2 \log(1 - r^2/R^2)` for :math:`|r| < R`."""

    stiffness: float
    max_strain: float

    def potential(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\Phi(r)` (``inf`` where :math:`|r| \ge R`)."""
        y = r / self.max_strain
        with np.errstate(divide="ignore", invalid="ignore"):
            out = -0.5 * self.stiffness * self.max_strain**2 * np.log1p(-y * y)
        return np.where(np.abs(y) < 1.0, out, np.inf)

    def tension(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\Phi'(r) = H r / (1 - (r/R)^2)`."""
        y = r / self.max_strain
        return self.stiffness * r / (1.0 - y * y)

    def curvature(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\Phi''(r) = H (1 + y^2) / (1 - y^2)^2`, :math:`y = r/R`."""
        y2 = (r / self.max_strain) ** 2
        return self.stiffness * (1.0 + y2) / (1.0 - y2) ** 2


@dataclass(frozen=True)
class QuarticBond:
    r"""Convex quartic bond :math:`\Phi(r) = k r^2/2 + \beta r^4/4` (FPU-:math:`\beta`)."""

    stiffness: float = 1.0
    beta: float = 1.0
    max_strain = None

    def potential(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\Phi(r)`."""
        r2 = r * r
        return (0.5 * self.stiffness + 0.25 * self.beta * r2) * r2

    def tension(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\Phi'(r)`."""
        return (self.stiffness + self.beta * r * r) * r

    def curvature(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\Phi''(r)`."""
        return self.stiffness + 3.0 * self.beta * r * r


@dataclass(frozen=True)
class DoubleWellBond:
    r"""Double-well bond :math:`\Phi(r) = h (r^2 - 1)^2 / 4` (non-convex where :math:`3r^2 < 1`).

    Its overdamped chain is a lattice Cahn–Hilliard-like flow without interface energy: strains in
    the spinodal region separate at the lattice scale, which the coarse-grained field shows as
    rough data.
    """

    height: float = 1.0
    max_strain = None

    def potential(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\Phi(r)`."""
        s = r * r - 1.0
        return 0.25 * self.height * s * s

    def tension(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\Phi'(r)`."""
        return self.height * (r * r - 1.0) * r

    def curvature(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\Phi''(r)`."""
        return self.height * (3.0 * r * r - 1.0)


Bond = FPUTBond | FENEBond | QuarticBond | DoubleWellBond


# --------------------------------------------------------------------------------------------
# initial conditions and periodic Fourier helpers
# --------------------------------------------------------------------------------------------


def random_sine_profile(
    rng: np.random.Generator,
    n_chain: int,
    *,
    length: float = TWO_PI,
    n_modes: int = 3,
    max_wavenumber: int = 6,
    amplitude: float = 1.0,
) -> np.ndarray:
    r"""Return the paper's random initial profile :math:`u_0(\varepsilon n)`, ``n = 0..N-1``.

    :math:`u_0(\xi) = \sum_{j=1}^{3} A_j \sin(2\pi k_j \xi / L + \phi_j)` with ``n_modes``
    *distinct* integer :math:`k_j` out of ``1..max_wavenumber`` (``rng.choice`` without
    replacement), :math:`A_j \sim U(0,1)`, :math:`\phi_j \sim U(0, 2\pi)` (drawn in this order),
    sampled at :math:`\xi_n = nL/N`, then centred and scaled so that the samples have standard
    deviation ``amplitude`` (again while the samples are constant, which has probability zero).

    Raises
    ------
    ValueError
        If ``max_wavenumber`` is not in ``n_modes .. N/2 - 1`` or ``amplitude`` is negative.

    """
    if not n_modes <= max_wavenumber < n_chain / 2 or n_modes < 1:
        raise ValueError(
            f"max_wavenumber must be in {n_modes}..{(n_chain - 1) // 2} for {n_modes} distinct "
            f"modes and {n_chain} particles, got {max_wavenumber}"
        )
    if not amplitude >= 0:
        raise ValueError(f"amplitude must be >= 0, got {amplitude!r}")
    xi = np.arange(n_chain) * (length / n_chain)
    while True:
        k = rng.choice(np.arange(1, max_wavenumber + 1), size=n_modes, replace=False)
        a = rng.uniform(0.0, 1.0, size=n_modes)
        phi = rng.uniform(0.0, TWO_PI, size=n_modes)
        u = np.sin(np.outer(xi, k) * (TWO_PI / length) + phi) @ a
        u -= u.mean()
        std = u.std()
        if std > 1e-12:
            return u * (amplitude / std)


def _periodic_derivative(values: np.ndarray, length: float) -> np.ndarray:
    """Spectral derivative of periodic samples on ``n L / N`` (Nyquist mode dropped)."""
    n = values.shape[-1]
    spec = np.fft.rfft(values)
    k = np.arange(spec.shape[-1]) * (TWO_PI / length)
    if n % 2 == 0:
        k[-1] = 0.0
    return np.fft.irfft(1j * k * spec, n=n)


def _linear_resample(values: np.ndarray, shift: float, n_out: int) -> np.ndarray:
    r"""Periodic linear interpolant of samples at :math:`y_n = n/N - s` (period 1) at :math:`j/M`.

    ``values`` has ``N`` samples on its last axis (any leading axes); ``shift`` :math:`s` is in
    units of the period. Equal to ``numpy.interp(j/M, (n/N - s) mod 1, values, period=1)``.
    """
    n_in = values.shape[-1]
    frac = float(shift) % 1.0
    y = np.arange(n_out) * (n_in / n_out) + frac * n_in  # j/M + s in units of 1/N
    i0 = np.floor(y)
    w = y - i0
    lo = i0.astype(np.int64) % n_in
    hi = (lo + 1) % n_in
    return values[..., lo] * (1.0 - w) + values[..., hi] * w


# --------------------------------------------------------------------------------------------
# Störmer–Verlet for Hamiltonian chains
# --------------------------------------------------------------------------------------------


def _verlet_inplace(
    r: np.ndarray,
    p: np.ndarray,
    bond: Bond,
    dt: float,
    n_steps: int,
    broken: np.ndarray,
    limit: float | None,
) -> None:
    """Advance ``(r, p)`` (shape ``(B, N)``) by ``n_steps`` Verlet steps in place.

    Rows with a strain :math:`|r_n| >` ``limit`` (``None``: no limit) after any step are flagged
    in ``broken`` and set to zero (they then stay at rest; the other rows are unaffected: every
    operation is row-wise).
    """
    half = 0.5 * dt
    kick = np.empty_like(p)
    drift = np.empty_like(r)

    def tension() -> np.ndarray:
        if limit is not None and not np.abs(r).max(initial=0.0) <= limit:  # also NaN
            over = ~(np.abs(r) <= limit).all(axis=-1)
            np.logical_or(broken, over, out=broken)
            r[over] = 0.0
            p[over] = 0.0
        return bond.tension(r)

    f = tension()
    for _ in range(n_steps):
        # p_n += dt/2 (f_n - f_{n-1});  r_n += dt (p_{n+1} - p_n);  p_n += dt/2 (f_n - f_{n-1})
        np.subtract(f[:, 1:], f[:, :-1], out=kick[:, 1:])
        np.subtract(f[:, 0], f[:, -1], out=kick[:, 0])
        kick *= half
        p += kick
        np.subtract(p[:, 1:], p[:, :-1], out=drift[:, :-1])
        np.subtract(p[:, 0], p[:, -1], out=drift[:, -1])
        drift *= dt
        r += drift
        f = tension()
        np.subtract(f[:, 1:], f[:, :-1], out=kick[:, 1:])
        np.subtract(f[:, 0], f[:, -1], out=kick[:, 0])
        kick *= half
        p += kick


def stormer_verlet(
    strain: np.ndarray,
    momentum: np.ndarray,
    bond: Bond,
    *,
    dt: float,
    n_steps: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Advance periodic chains by ``n_steps`` Störmer–Verlet steps of size ``dt``.

    Parameters
    ----------
    strain, momentum
        Bond strains :math:`r_n` and particle momenta :math:`p_n`, shape ``(N,)`` or
        ``(chains, N)``; they are not modified.
    bond
        The bond potential (``tension`` and, for FENE, ``max_strain``).
    dt, n_steps
        Step size (negative integrates backwards) and number of steps.

    Returns
    -------
    tuple of numpy.ndarray
        The new strains and momenta, shaped like the input.

    Raises
    ------
    BondBreakError
        If a strain reaches the bond's maximal extension.

    """
    r = np.array(strain, dtype=float, ndmin=2)
    p = np.array(momentum, dtype=float, ndmin=2)
    if r.shape != p.shape or r.ndim != 2 or r.shape[-1] < 3:
        raise ValueError(f"strain {np.shape(strain)} and momentum {np.shape(momentum)} mismatch")
    broken = np.zeros(r.shape[0], dtype=bool)
    # |r| >= R breaks the bond: |r| > the float just below R
    limit = None if bond.max_strain is None else float(np.nextafter(bond.max_strain, 0.0))
    _verlet_inplace(r, p, bond, float(dt), int(n_steps), broken, limit)
    if broken.any():
        raise BondBreakError(
            f"chain(s) {np.flatnonzero(broken).tolist()}: strain reached the maximal bond "
            f"extension {bond.max_strain!r}"
        )
    shape = np.shape(strain)
    return r.reshape(shape), p.reshape(shape)


@dataclass
class ChainTrajectory:
    r"""A microscopic chain trajectory at its saved times.

    Attributes
    ----------
    kind
        ``"fput"``, ``"fene"`` or ``"dissipative"``.
    times
        Slow (mesoscopic) times :math:`\tau_k`.
    lattice_times
        Microscopic times :math:`t_k`.
    strains
        Bond strains, shape ``(times, N)``.
    momenta
        Particle momenta, shape ``(times, N)`` (``None`` for the overdamped chain).
    energies
        The chain's exact discrete energy at each saved time: :math:`H` (Hamiltonian chains) or
        the total bond energy :math:`\sum_n \Phi(r_n)` (dissipative chain).
    eps
        :math:`\varepsilon = L / N`.
    shifts
        Co-moving frame shifts :math:`s_k = \varepsilon c t_k` modulo ``length``.
    scale
        :math:`u = r / \text{scale}` (:math:`\varepsilon^2` or 1).
    length
        The slow period ``L``.
    dt
        The microscopic step (the largest one for the adaptive dissipative chain).
    parameters
        Every parameter of the run (JSON-serialisable).

    """

    kind: str
    times: np.ndarray
    lattice_times: np.ndarray
    strains: np.ndarray
    momenta: np.ndarray | None
    energies: np.ndarray
    eps: float
    shifts: np.ndarray
    scale: float
    length: float
    dt: float
    parameters: dict[str, Any] = field(default_factory=dict)

    def mesoscopic_grid(self, n_points: int) -> np.ndarray:
        r"""Return :math:`u(\xi_j, \tau_k)`, ``xi_j = j L / n_points``, shape ``(times, n_points)``.

        The co-moving periodic linear interpolation of :func:`coarse_grain_to_mesh`, on a grid.
        """
        return np.array(
            [
                _linear_resample(r, s / self.length, n_points) / self.scale
                for r, s in zip(self.strains, self.shifts, strict=True)
            ]
        )


def _frames(t_end: float, frame_dt: float) -> int:
    """Return the number of saved intervals; ``t_end`` must be a multiple of ``frame_dt``."""
    if not (t_end > 0 and frame_dt > 0 and math.isfinite(t_end / frame_dt)):
        raise ValueError(f"t_end and frame_dt must be > 0, got {t_end!r}, {frame_dt!r}")
    n = round(t_end / frame_dt)
    if n < 1 or abs(n * frame_dt - t_end) > 1e-9 * t_end:
        raise ValueError(f"t_end = {t_end!r} is not a multiple of frame_dt = {frame_dt!r}")
    return n


@dataclass(frozen=True)
class _HamiltonianSetup:
    bond: Bond
    eps: float
    speed: float
    dt: float
    steps_per_frame: int
    n_frames: int
    frame_dt: float
    length: float
    n_chain: int
    strain_limit: float | None  # FENE: reject |r| > limit at any step
    max_abs_u: float | None  # FPUT: reject max |r / eps^2| > this at a saved frame


def _hamiltonian_setup(kind: str, params: dict[str, Any]) -> _HamiltonianSetup:
    n_chain = int(params["n_chain"])
    length = float(params["length"])
    if n_chain < 8 or not length > 0:
        raise ValueError(f"{kind}: need n_chain >= 8 and length > 0, got {n_chain}, {length}")
    b = float(params["b"])
    if not b > 0:
        raise ValueError(f"{kind}: the KdV dispersion coefficient b must be > 0, got {b!r}")
    eps = length / n_chain
    c = 24.0 * b
    strain_limit = max_abs_u = None
    if kind == "fput":
        bond: Bond = FPUTBond(stiffness=c * c, alpha=float(params["a"]) * c)
        if params["max_abs_u"] is not None:
            max_abs_u = float(params["max_abs_u"])
            if not max_abs_u > 0:
                raise ValueError(f"fput: max_abs_u must be > 0 or None, got {max_abs_u!r}")
    else:
        max_strain = float(params["max_strain_factor"]) * eps**2
        bond = FENEBond(stiffness=c * c, max_strain=max_strain)
        ratio = float(params["max_strain_ratio"])
        if not (0 < ratio <= 1 and max_strain > 0):
            raise ValueError(
                f"fene: need 0 < max_strain_ratio <= 1 and max_strain_factor > 0, got {ratio!r}, "
                f"{params['max_strain_factor']!r}"
            )
        strain_limit = ratio * max_strain
        if ratio == 1.0:  # |r| >= R breaks the bond
            strain_limit = float(np.nextafter(strain_limit, 0.0))
    frame_dt = float(params["frame_dt"])
    n_frames = _frames(float(params["t_end"]), frame_dt)
    slow_dt = float(params["slow_dt"])
    substeps = int(params["substeps"])
    if not slow_dt > 0 or substeps < 1:
        raise ValueError(
            f"{kind}: need slow_dt > 0 and substeps >= 1, got {slow_dt!r}, {substeps!r}"
        )
    slow_steps = round(frame_dt / slow_dt)
    if slow_steps < 1 or abs(slow_steps * slow_dt - frame_dt) > 1e-9 * frame_dt:
        raise ValueError(
            f"{kind}: frame_dt = {frame_dt!r} is not a multiple of slow_dt = {slow_dt!r}"
        )
    dt = slow_dt / eps**3 / substeps
    if not c * dt < 1.0:
        raise ValueError(
            f"{kind}: the Verlet step is unstable (c dt = {c * dt:.3g} >= 1: raise substeps)"
        )
    return _HamiltonianSetup(
        bond,
        eps,
        c,
        dt,
        slow_steps * substeps,
        n_frames,
        frame_dt,
        length,
        n_chain,
        strain_limit,
        max_abs_u,
    )


def _hamiltonian_initial_state(
    u0: np.ndarray, setup: _HamiltonianSetup
) -> tuple[np.ndarray, np.ndarray]:
    """Strains ``eps^2 u0`` and momenta whose differences are ``-c eps^3 u0'`` (zero mean)."""
    eps, c = setup.eps, setup.speed
    r = eps**2 * u0
    s = -c * eps**3 * _periodic_derivative(u0, setup.length)
    s = s - s.mean(axis=-1, keepdims=True)
    p = np.zeros_like(s)
    p[..., 1:] = np.cumsum(s[..., :-1], axis=-1)
    p -= p.mean(axis=-1, keepdims=True)
    return r, p


def _hamiltonian_energy(bond: Bond, r: np.ndarray, p: np.ndarray) -> np.ndarray:
    return 0.5 * np.sum(p * p, axis=-1) + np.sum(bond.potential(r), axis=-1)


def _run_hamiltonian(
    u0: np.ndarray, setup: _HamiltonianSetup
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integrate a batch ``u0`` of shape ``(B, N)``; return strains, momenta, energies, rejected.

    A rejected row (the protocol's rule: FENE strain limit at any step, FPUT largest ``|u|`` at a
    saved frame, or a non-finite value) is set to zero from then on.
    """
    r, p = _hamiltonian_initial_state(np.atleast_2d(u0), setup)
    rejected = np.zeros(r.shape[0], dtype=bool)
    bound = None if setup.max_abs_u is None else setup.max_abs_u * setup.eps**2

    def check_frame() -> None:
        if setup.strain_limit is not None:
            rejected[~(np.abs(r) <= setup.strain_limit).all(axis=-1)] = True
        bad = ~np.isfinite(p).all(axis=-1)
        bad |= ~(np.isfinite(r) if bound is None else np.abs(r) <= bound).all(axis=-1)
        rejected[bad] = True
        r[rejected] = 0.0
        p[rejected] = 0.0

    check_frame()
    strains, momenta = [r.copy()], [p.copy()]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(setup.n_frames):
            _verlet_inplace(
                r, p, setup.bond, setup.dt, setup.steps_per_frame, rejected, setup.strain_limit
            )
            check_frame()
            strains.append(r.copy())
            momenta.append(p.copy())
    strains_a = np.stack(strains, axis=1)
    momenta_a = np.stack(momenta, axis=1)
    energies = np.zeros(strains_a.shape[:2])
    ok = ~rejected
    energies[ok] = _hamiltonian_energy(setup.bond, strains_a[ok], momenta_a[ok])
    return strains_a, momenta_a, energies, rejected


def _hamiltonian_trajectory(
    kind: str,
    setup: _HamiltonianSetup,
    strains: np.ndarray,
    momenta: np.ndarray,
    energies: np.ndarray,
    params: dict[str, Any],
) -> ChainTrajectory:
    k = np.arange(setup.n_frames + 1)
    lattice_times = k * (setup.steps_per_frame * setup.dt)
    shifts = np.mod(setup.eps * setup.speed * lattice_times, setup.length)
    return ChainTrajectory(
        kind=kind,
        times=k * setup.frame_dt,
        lattice_times=lattice_times,
        strains=strains,
        momenta=momenta,
        energies=energies,
        eps=setup.eps,
        shifts=shifts,
        scale=setup.eps**2,
        length=setup.length,
        dt=setup.dt,
        parameters=dict(params),
    )


def _rejection_error(kind: str, setup: _HamiltonianSetup, what: str) -> RejectedSampleError:
    if kind == "fene":
        limit, big_r = float(setup.strain_limit or 0.0), float(setup.bond.max_strain or 1.0)
        return BondBreakError(
            f"fene chain ({what}): a strain exceeded {limit:.6g} = {limit / big_r:.3g} R "
            f"(R = {big_r:.6g}); the sample is rejected"
        )
    return RejectedSampleError(
        f"fput chain ({what}): max |u| exceeded {setup.max_abs_u!r} at a saved frame (or the "
        "chain blew up); the sample is rejected"
    )


def _initial_profile(
    kind: str, seed: Any, u0: Any, params: dict[str, Any]
) -> tuple[np.ndarray, Any]:
    n_chain = int(params["n_chain"])
    if u0 is not None:
        prof = np.array(u0, dtype=float)
        if prof.shape != (n_chain,) or not np.isfinite(prof).all():
            raise ValueError(f"{kind}: u0 must be {n_chain} finite values, got shape {prof.shape}")
        return prof, None
    rng = np.random.default_rng(seed)
    return _draw_profile(rng, params), rng


def _draw_profile(rng: np.random.Generator, params: dict[str, Any]) -> np.ndarray:
    prof = random_sine_profile(
        rng,
        int(params["n_chain"]),
        length=float(params["length"]),
        max_wavenumber=int(params["max_wavenumber"]),
        amplitude=float(params["amplitude"]),
    )
    return prof + float(params.get("mean", 0.0))


def _single_hamiltonian(kind: str, seed: Any, u0: Any, params: dict[str, Any]) -> ChainTrajectory:
    setup = _hamiltonian_setup(kind, params)
    prof, _ = _initial_profile(kind, seed, u0, params)
    strains, momenta, energies, rejected = _run_hamiltonian(prof, setup)
    if rejected[0]:
        raise _rejection_error(kind, setup, "u0 given" if u0 is not None else f"seed {seed!r}")
    return _hamiltonian_trajectory(kind, setup, strains[0], momenta[0], energies[0], params)


def fput_chain(
    *,
    seed: int | None = None,
    u0: np.ndarray | None = None,
    n_chain: int = 128,
    length: float = TWO_PI,
    a: float = 1.0,
    b: float = 1.0 / 24.0,
    t_end: float = 1.0,
    frame_dt: float = 1e-2,
    slow_dt: float = 1e-3,
    substeps: int = 50,
    amplitude: float = 1.0,
    max_wavenumber: int = 6,
    max_abs_u: float | None = 20.0,
) -> ChainTrajectory:
    r"""Integrate a periodic FPUT chain in the KdV scaling (the paper's protocol by default).

    Parameters
    ----------
    seed
        Seed of the random initial profile (:func:`random_sine_profile`); ignored if ``u0`` is
        given.
    u0
        The initial slow profile :math:`u_0(\varepsilon n)`, ``n_chain`` values (instead of a
        random one).
    n_chain, length
        Number of particles ``N`` (128 in the paper) and slow period ``L``
        (:math:`\varepsilon = L/N`).
    a, b
        KdV coefficients: :math:`c = 24 b`, :math:`\alpha = a c` (the paper's code: ``a = 1``,
        ``b = 1/24``, so :math:`c = \alpha = 1`).
    t_end, frame_dt
        Final slow time and slow time between saved frames (paper: 1.0 and 1e-2).
    slow_dt, substeps
        The slow-time step (paper: 1e-3; ``frame_dt`` must be a multiple of it) and the lab-time
        Verlet steps per slow step (paper: 50): :math:`\Delta t = \text{slow\_dt} /
        (\varepsilon^3\,\text{substeps})`, which must satisfy :math:`c\,\Delta t < 1` (stability
        of the linear lattice).
    amplitude, max_wavenumber
        Standard deviation and largest wavenumber of the random initial profile (paper: 1, 6).
    max_abs_u
        Reject the sample if :math:`\max_n |r_n|/\varepsilon^2` exceeds it at a saved frame
        (paper: 20); ``None``: reject only non-finite values.

    Returns
    -------
    ChainTrajectory
        Strains, momenta and the exact discrete Hamiltonian at each saved time.

    Raises
    ------
    RejectedSampleError
        If the protocol rejects the sample.

    """
    params = _locals_params(fput_chain, locals())
    return _single_hamiltonian("fput", seed, u0, params)


def fene_chain(
    *,
    seed: int | None = None,
    u0: np.ndarray | None = None,
    n_chain: int = 209,
    length: float = TWO_PI,
    b: float = 1.0 / 24.0,
    max_strain_factor: float = 50.0,
    max_strain_ratio: float = 0.9,
    t_end: float = 0.25,
    frame_dt: float = 5e-3,
    slow_dt: float = 5e-4,
    substeps: int = 50,
    amplitude: float = 1.0,
    max_wavenumber: int = 6,
) -> ChainTrajectory:
    r"""Integrate a periodic FENE chain in the co-moving slow scaling (the paper's protocol).

    Bond tension :math:`H r / (1 - (r/R)^2)` with :math:`H = c^2`, :math:`c = 24 b` (paper:
    :math:`c = H = 1`) and :math:`R` = ``max_strain_factor`` :math:`\varepsilon^2` (paper: 50,
    ``n_chain = 209``); slow step 5e-4 of ``substeps`` Verlet steps (REFERENCE.md does not give
    FENE's sub-step count: FPUT's 50, :math:`c\,\Delta t = 0.37`), frames every 5e-3, 51 frames
    (``t_end = 0.25``). A sample with :math:`|r_n| >` ``max_strain_ratio`` :math:`R` after any
    Verlet step (paper: 0.9) is rejected. The other parameters are those of :func:`fput_chain`.

    Returns
    -------
    ChainTrajectory
        Strains, momenta and the exact discrete Hamiltonian at each saved time.

    Raises
    ------
    BondBreakError
        If the protocol rejects the sample.

    """
    params = _locals_params(fene_chain, locals())
    return _single_hamiltonian("fene", seed, u0, params)


# --------------------------------------------------------------------------------------------
# the dissipative (overdamped) chain
# --------------------------------------------------------------------------------------------


def _dissipative_bond(params: dict[str, Any]) -> Bond:
    name = params["potential"]
    if name == "quartic":
        return QuarticBond(stiffness=float(params["stiffness"]), beta=float(params["beta"]))
    if name == "double_well":
        return DoubleWellBond(height=float(params["stiffness"]))
    raise ValueError(
        f"dissipative chain: potential must be 'quartic' or 'double_well', got {name!r}"
    )


def _run_dissipative(
    u0: np.ndarray, rng: np.random.Generator | None, params: dict[str, Any]
) -> ChainTrajectory:
    bond = _dissipative_bond(params)
    n_chain = int(params["n_chain"])
    length = float(params["length"])
    gamma = float(params["friction"])
    temperature = float(params["temperature"])
    courant = float(params["courant"])
    if not (gamma > 0 and temperature >= 0 and 0 < courant < 2):
        raise ValueError(
            "dissipative chain: need friction > 0, temperature >= 0 and 0 < courant < 2, got "
            f"{gamma!r}, {temperature!r}, {courant!r}"
        )
    if temperature > 0 and rng is None:
        raise ValueError("dissipative chain: a positive temperature needs a random generator")
    n_frames = _frames(float(params["t_end"]), float(params["frame_dt"]))
    eps = length / n_chain
    frame_lattice = float(params["frame_dt"]) / eps**2
    max_dt = float(params["max_dt"])
    r = np.array(u0, dtype=float)
    energy = float(np.sum(bond.potential(r)))
    strains, energies = [r.copy()], [energy]
    lap = np.empty_like(r)
    out = np.empty_like(r)
    noise_scale = math.sqrt(2.0 * temperature / gamma)
    n_steps = n_halvings = 0
    largest = 0.0

    def rate(x: np.ndarray) -> np.ndarray:
        # (Delta Phi'(r))_n / gamma
        f = bond.tension(x)
        np.subtract(f[1:], f[:-1], out=lap[1:])
        lap[0] = f[0] - f[-1]
        np.subtract(lap[1:], lap[:-1], out=out[:-1])
        out[-1] = lap[0] - lap[-1]
        return out / gamma

    for _ in range(n_frames):
        remaining = frame_lattice
        while remaining > 1e-12 * frame_lattice:
            stiff = float(np.max(np.abs(bond.curvature(r))))
            dt = min(max_dt, remaining, courant * gamma / (4.0 * max(stiff, 1e-300)))
            drift = rate(r)
            if temperature > 0:
                w = rng.standard_normal(n_chain)
                trial = r + dt * drift + noise_scale * math.sqrt(dt) * (np.roll(w, -1) - w)
                new_energy = float(np.sum(bond.potential(trial)))
            else:
                while True:  # energy-monotone: halve until E does not increase (in floats)
                    trial = r + dt * drift
                    new_energy = float(np.sum(bond.potential(trial)))
                    if new_energy <= energy:
                        break
                    dt *= 0.5
                    n_halvings += 1
            r, energy = trial, new_energy
            remaining -= dt
            largest = max(largest, dt)
            n_steps += 1
        strains.append(r.copy())
        energies.append(energy)
    k = np.arange(n_frames + 1)
    params = dict(params, steps=n_steps, halvings=n_halvings)
    return ChainTrajectory(
        kind="dissipative",
        times=k * float(params["frame_dt"]),
        lattice_times=k * frame_lattice,
        strains=np.array(strains),
        momenta=None,
        energies=np.array(energies),
        eps=eps,
        shifts=np.zeros(n_frames + 1),
        scale=1.0,
        length=length,
        dt=largest,
        parameters=params,
    )


def dissipative_chain(
    *,
    seed: int | None = None,
    u0: np.ndarray | None = None,
    n_chain: int = 128,
    length: float = TWO_PI,
    potential: str = "quartic",
    stiffness: float = 1.0,
    beta: float = 1.0,
    friction: float = 1.0,
    temperature: float = 0.0,
    t_end: float = 0.1,
    frame_dt: float = 1e-3,
    courant: float = 0.5,
    max_dt: float = 0.1,
    amplitude: float = 1.0,
    mean: float = 0.0,
    max_wavenumber: int = 5,
) -> ChainTrajectory:
    r"""Integrate an overdamped periodic chain (a discrete gradient flow; module docstring).

    Parameters
    ----------
    seed
        Seed of the random initial profile and of the noise.
    u0
        The initial strains :math:`r_n = u_0(\varepsilon n)` (instead of a random profile).
    n_chain, length
        Number of particles and slow period (:math:`\varepsilon = L/N`).
    potential
        ``"quartic"`` (:class:`QuarticBond`, convex: nonlinear diffusion) or ``"double_well"``
        (:class:`DoubleWellBond`, height ``stiffness``).
    stiffness, beta
        Bond parameters.
    friction, temperature
        :math:`\gamma` and :math:`k_B T` (0: deterministic gradient descent).
    t_end, frame_dt
        Final slow time and slow time between frames (:math:`\tau = \varepsilon^2 t`).
    courant, max_dt
        Step control: :math:`\Delta t = \min(\text{max\_dt}, \text{courant}\,\gamma /
        (4\max_n|\Phi''(r_n)|))` (explicit Euler is stable for ``courant < 2``; ``<= 1/2`` keeps
        the energy decreasing without halvings in practice).
    amplitude, mean, max_wavenumber
        The random initial profile: :func:`random_sine_profile` plus ``mean``.

    Returns
    -------
    ChainTrajectory
        Strains and total bond energies :math:`\sum_n\Phi(r_n)` at each saved time (``momenta``
        is ``None``); ``parameters`` also holds the number of steps and halvings.

    """
    params = _locals_params(dissipative_chain, locals())
    prof, rng = _initial_profile("dissipative", seed, u0, params)
    return _run_dissipative(prof, np.random.default_rng(seed) if rng is None else rng, params)


def _locals_params(func: Callable[..., Any], values: dict[str, Any]) -> dict[str, Any]:
    """Return the JSON parameters of a chain call (everything but ``seed`` and ``u0``)."""
    names = [n for n in inspect.signature(func).parameters if n not in ("seed", "u0")]
    return {n: values[n] for n in names}


# --------------------------------------------------------------------------------------------
# coarse-graining onto a periodic interval mesh
# --------------------------------------------------------------------------------------------


def _check_p1_periodic(space: Any) -> None:
    element = space.ufl_element()
    if (
        mesh_of(space).geometric_dimension != 1
        or element.family() != "Lagrange"
        or element.degree() != 1
        or space.value_shape != ()
    ):
        raise ValueError(f"coarse-graining needs scalar P1 on a 1-D periodic mesh, got {element}")


def _write_grid(function: fd.Function, index: np.ndarray, grid_values: np.ndarray) -> fd.Function:
    function.dat.data_with_halos[:] = grid_values[index]
    return function


def coarse_grain_to_mesh(
    strain: np.ndarray,
    space: Any,
    *,
    shift: float = 0.0,
    scale: float = 1.0,
    length: float = TWO_PI,
) -> fd.Function:
    r"""Return the mesoscopic field of one chain snapshot as a P1 ``Function`` (collective).

    The chain values :math:`u_n = r_n/\text{scale}` sit at the slow positions
    :math:`\xi_n = nL/N - s` (:math:`s` = ``shift``, the co-moving frame's displacement
    :math:`\varepsilon c t`). Their periodic piecewise-linear interpolant (the paper's
    coarse-graining, ``numpy.interp(x, xi, u, period=L)``) is evaluated at the vertices
    :math:`\xi_j = jL/M` of ``PeriodicIntervalMesh(M, L)`` and written into P1 through each
    rank's vertex coordinates. The result does not depend on the number of ranks.

    Parameters
    ----------
    strain
        The ``N`` bond strains of one snapshot.
    space
        Scalar P1 on ``firedrake.PeriodicIntervalMesh(M, length)``.
    shift
        The frame shift :math:`s` (any real number; taken modulo ``length``).
    scale
        Divides the strains (:math:`\varepsilon^2` for the FPUT/FENE scaling).
    length
        The mesh's period :math:`L`.

    Returns
    -------
    firedrake.Function
        :math:`u(\xi_j)` at the vertices.

    Raises
    ------
    ValueError
        If the space is not scalar P1 on a 1-D mesh or the strain is not 1-D with >= 3 values.

    """
    _check_p1_periodic(space)
    r = np.asarray(strain, dtype=float)
    if r.ndim != 1 or r.size < 3:
        raise ValueError(f"coarse-graining: strain must be 1-D with >= 3 values, got {r.shape}")
    n_points = space.dim()
    index = grid_index(space, [n_points], np.array([float(length)]))
    grid = _linear_resample(r, float(shift) / length, n_points) / scale
    return _write_grid(fd.Function(space), index, grid)


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------

_CHAINS: dict[str, Callable[..., ChainTrajectory]] = {
    "fput": fput_chain,
    "fene": fene_chain,
    "dissipative": dissipative_chain,
}


def _chain_results(
    kind: str,
    indices: list[int],
    seed: int,
    params: dict[str, Any],
    n_points: int,
    batch_size: int,
    max_resamples: int,
    bar: Any,
) -> dict[int, dict[str, Any]]:
    """Integrate the chains ``indices``; return their grid values, energies and metadata."""
    children = np.random.SeedSequence(seed).spawn(max(indices, default=-1) + 1)
    rngs = {i: np.random.default_rng(children[i]) for i in indices}
    results: dict[int, dict[str, Any]] = {}
    if kind == "dissipative":
        for i in indices:
            traj = _run_dissipative(_draw_profile(rngs[i], params), rngs[i], params)
            results[i] = {
                "grid": traj.mesoscopic_grid(n_points),
                "energies": traj.energies,
                "lattice_times": traj.lattice_times,
                "resampled": 0,
                "extra": {
                    "steps": traj.parameters["steps"],
                    "halvings": traj.parameters["halvings"],
                },
            }
            if bar is not None:
                bar.update(1)
        return results
    setup = _hamiltonian_setup(kind, params)
    pending = [(i, _draw_profile(rngs[i], params)) for i in indices]
    resampled = dict.fromkeys(indices, 0)
    while pending:
        batch, pending = pending[:batch_size], pending[batch_size:]
        strains, momenta, energies, rejected = _run_hamiltonian(
            np.array([prof for _, prof in batch]), setup
        )
        for row, (i, _) in enumerate(batch):
            if rejected[row]:
                resampled[i] += 1
                if resampled[i] > max_resamples:
                    raise _rejection_error(
                        kind, setup, f"trajectory {i}, seed {seed}: {max_resamples} resampled"
                    )
                pending.append((i, _draw_profile(rngs[i], params)))
                continue
            traj = _hamiltonian_trajectory(
                kind, setup, strains[row], momenta[row], energies[row], params
            )
            results[i] = {
                "grid": traj.mesoscopic_grid(n_points),
                "energies": traj.energies,
                "lattice_times": traj.lattice_times,
                "resampled": resampled[i],
                "extra": {"steps_per_frame": setup.steps_per_frame, "dt": setup.dt},
            }
            if bar is not None:
                bar.update(1)
    return results


def generate_chain_dataset(
    kind: str,
    *,
    n_trajectories: int,
    seed: int,
    n_points: int = 256,
    comm: Any = None,
    progress: bool = True,
    batch_size: int = 64,
    max_resamples: int = 20,
    **parameters: Any,
) -> Dataset:
    r"""Generate a dataset of coarse-grained chain trajectories on a periodic interval mesh.

    Each trajectory is a microscopic chain (:func:`fput_chain`, :func:`fene_chain` or
    :func:`dissipative_chain`, with the paper's random initial profile) coarse-grained at every
    saved time by :func:`coarse_grain_to_mesh` onto P1 of ``PeriodicIntervalMesh(n_points, L)``.
    Trajectory ``i`` uses the random stream ``SeedSequence(seed).spawn(...)[i]`` (initial profile,
    resamples, noise), so it depends on ``(seed, i)`` and the parameters only. The chains are
    shared out round-robin over the ranks of ``comm``, integrated (FPUT/FENE in batches of
    ``batch_size``, vectorised) and their vertex values gathered on every rank.

    A sample the paper's protocol rejects (FENE: a strain beyond 0.9 R at any step; FPUT:
    :math:`\max|u| > 20` at a saved frame) is replaced by a new initial profile drawn from the
    same trajectory's stream (at most ``max_resamples`` times, then :class:`BondBreakError` /
    :class:`RejectedSampleError`); the count is kept in the trajectory's metadata
    (``"resampled"``). ``scripts/paper_data.py`` writes the same FPUT/FENE trajectories (same
    streams and draws; a separate NumPy implementation) in the paper's HDF5 layout.

    Parameters
    ----------
    kind
        ``"fput"``, ``"fene"`` or ``"dissipative"``.
    n_trajectories
        Number of trajectories (>= 1).
    seed
        Seed of the whole dataset.
    n_points
        Number of mesh vertices (256 in the paper).
    comm
        The mesh's communicator (default ``COMM_WORLD``).
    progress
        Show a tqdm progress bar (on rank 0 of ``COMM_WORLD`` only).
    batch_size
        Chains integrated together (FPUT/FENE); does not change the results.
    max_resamples
        Largest number of rejected samples per trajectory.
    **parameters
        Keyword parameters of the chain function (``n_chain``, ``b``, ``t_end``, ``amplitude``,
        ...); an unknown name is a ``ValueError``.

    Returns
    -------
    Dataset
        On scalar P1; metadata: generator, kind, every parameter, seed, ``n_points``, ``"grid"``
        (for :func:`femeso.data.to_grid_arrays`) and ``"fields": ["u"]``; each trajectory's
        metadata also has its index, the chain energies and lattice times per saved time and the
        number of resampled initial conditions.

    Raises
    ------
    ValueError
        On an unknown kind or parameter, or bad sizes.

    """
    if kind not in _CHAINS:
        raise ValueError(f"kind must be one of {sorted(_CHAINS)}, got {kind!r}")
    func = _CHAINS[kind]
    signature = inspect.signature(func).parameters
    allowed = [n for n in signature if n not in ("seed", "u0")]
    unknown = sorted(set(parameters) - set(allowed))
    if unknown:
        raise ValueError(
            f"{kind} chain: unknown parameter(s) {unknown}; expected some of {allowed}"
        )
    if n_trajectories < 1 or n_points < 3 or batch_size < 1 or max_resamples < 0:
        raise ValueError(
            f"need n_trajectories >= 1, n_points >= 3, batch_size >= 1 and max_resamples >= 0, got "
            f"{n_trajectories}, {n_points}, {batch_size}, {max_resamples}"
        )
    params = {n: parameters.get(n, signature[n].default) for n in allowed}
    comm = fd.COMM_WORLD if comm is None else comm
    length = float(params["length"])
    mesh = fd.PeriodicIntervalMesh(n_points, length, comm=comm)
    V = fd.FunctionSpace(mesh, "CG", 1)
    index = grid_index(V, [n_points], np.array([length]))

    mine = list(range(comm.rank, n_trajectories, comm.size))
    bar = progress_bar(len(mine), f"femeso {kind} chains", "chain", enabled=progress)
    try:
        local = _chain_results(
            kind, mine, int(seed), params, n_points, batch_size, max_resamples, bar
        )
    finally:
        if bar is not None:
            bar.close()
    results: dict[int, dict[str, Any]] = {}
    for part in comm.allgather(local):
        results.update(part)

    generator = f"femeso.data.chains.generate_chain_dataset[{kind}]"
    trajectories = []
    for i in range(n_trajectories):
        res = results[i]
        times = np.arange(res["grid"].shape[0]) * float(params["frame_dt"])
        states = [_write_grid(fd.Function(V), index, g) for g in res["grid"]]
        meta = {
            "generator": generator,
            "kind": kind,
            "index": i,
            "seed": int(seed),
            "parameters": dict(params),
            "chain_energy": [float(e) for e in res["energies"]],
            "lattice_times": [float(t) for t in res["lattice_times"]],
            "resampled": int(res["resampled"]),
            **{k: (float(v) if isinstance(v, float) else int(v)) for k, v in res["extra"].items()},
        }
        trajectories.append(TrajectoryData(V, times, states, meta))
    total_resampled = sum(int(r["resampled"]) for r in results.values())
    drift = max(
        float(np.max(np.abs(r["energies"] - r["energies"][0])) / max(abs(r["energies"][0]), 1e-300))
        for r in results.values()
    )
    logger.info(
        "%s chains: %d trajectories x %d frames on %d points, %d resampled, "
        "max relative chain-energy change %.3e",
        kind,
        n_trajectories,
        len(trajectories[0]),
        n_points,
        total_resampled,
        drift,
    )
    metadata = {
        "generator": generator,
        "kind": kind,
        "seed": int(seed),
        "n_trajectories": int(n_trajectories),
        "n_points": int(n_points),
        "parameters": dict(params),
        "resampled": total_resampled,
        "fields": ["u"],
        "grid": {"shape": [int(n_points)], "lengths": [length]},
    }
    return Dataset(V, trajectories, metadata)
