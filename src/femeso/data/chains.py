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
:math:`u_\tau + a u u_\xi + b u_{\xi\xi\xi} = 0` (its formal limit in the scaling below). FENE:
:math:`\Phi(r) = -\tfrac12 H R^2 \log(1 - r^2/R^2)`, tension :math:`H r / (1 - (r/R)^2)`,
:math:`H = c^2`, :math:`R = 50\varepsilon^2`. Both are integrated with Störmer–Verlet (velocity
Verlet in :math:`(q, p)`, written in strains: half kick, drift, half kick): symplectic,
time-reversible, second order, conserving :math:`\sum r_n` and :math:`\sum p_n` to round-off and
:math:`H` to :math:`O(\Delta t^2)` without drift. A FENE chain whose strain reaches :math:`|r_n| \ge
R` at any step is rejected (:class:`BondBreakError`; the dataset generator draws a new initial
condition from the same trajectory's random stream and records how often it did).

Scaling (co-moving slow frame): :math:`\varepsilon = L_x / N`, :math:`r_n(t) = \varepsilon^2
u(\xi, \tau)` with :math:`\xi = \varepsilon(n - c t)`, :math:`\tau = \varepsilon^3 t`. Initial
condition: :math:`u_0` a sum of 3 sine modes (random integer wavenumbers in
``1..max_wavenumber``, amplitudes :math:`U(0,1)`, phases :math:`U(0, 2\pi)`), centred and scaled
to standard deviation ``amplitude`` (1 in the paper) over the particles, and strain velocities of
the right-travelling wave :math:`\dot r_n(0) = -c\varepsilon^3 u_0'(\varepsilon n)` (spectral
derivative); the momenta are their discrete antiderivative with zero total momentum.

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

**Coarse-graining** (:func:`coarse_grain_to_mesh`): the chain values, scaled, sit at the slow
positions :math:`\xi_n = \varepsilon n - s` (:math:`s = \varepsilon c t`); their periodic
trigonometric (band-limited Fourier) interpolant is evaluated at the vertices of
``PeriodicIntervalMesh(n_points, L)`` and put into P1 exactly at the vertices. For
``n_points >= N`` the interpolant of the chain is reproduced exactly at the vertices and
:math:`\int u_h\,d\xi = \varepsilon\sum_n r_n / \text{scale}` (the trapezoidal rule is exact on
trigonometric polynomials), so the mesh field conserves what the chain conserves.

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
from mpi4py import MPI

from femeso._log import logger
from femeso.data.io import grid_index
from femeso.data.trajectories import Dataset, TrajectoryData, mesh_of

__all__ = [
    "BondBreakError",
    "ChainTrajectory",
    "DoubleWellBond",
    "FENEBond",
    "FPUTBond",
    "QuarticBond",
    "coarse_grain_to_mesh",
    "dissipative_chain",
    "fene_chain",
    "fput_chain",
    "generate_chain_dataset",
    "random_sine_profile",
    "stormer_verlet",
]

TWO_PI = 2.0 * math.pi


class BondBreakError(ValueError):
    """A chain's strain reached the maximal extension of its bonds (a rejected FENE sample)."""


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
    max_wavenumber: int = 5,
    amplitude: float = 1.0,
) -> np.ndarray:
    r"""Return the paper's random initial profile :math:`u_0(\varepsilon n)`, ``n = 0..N-1``.

    :math:`u_0(\xi) = \sum_{j=1}^{3} A_j \sin(2\pi k_j \xi / L + \phi_j)` with integer
    :math:`k_j` uniform in ``1..max_wavenumber``, :math:`A_j \sim U(0,1)`, :math:`\phi_j \sim
    U(0, 2\pi)`, sampled at :math:`\xi_n = nL/N`, then centred and scaled so that the samples have
    standard deviation ``amplitude``. Draws ``3 * n_modes`` numbers from ``rng`` (again while the
    samples are constant, which has probability zero).

    Raises
    ------
    ValueError
        If ``max_wavenumber`` is not in ``1 .. N/2 - 1`` or ``amplitude`` is negative.

    """
    if not 1 <= max_wavenumber < n_chain / 2:
        raise ValueError(
            f"max_wavenumber must be in 1..{(n_chain - 1) // 2} for {n_chain} particles, "
            f"got {max_wavenumber}"
        )
    if not amplitude >= 0:
        raise ValueError(f"amplitude must be >= 0, got {amplitude!r}")
    xi = np.arange(n_chain) * (length / n_chain)
    while True:
        k = rng.integers(1, max_wavenumber + 1, size=n_modes)
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


def _shifted_resample(values: np.ndarray, shift: float, n_out: int) -> np.ndarray:
    r"""Trigonometric interpolant of samples at :math:`y_n = n/N` (period 1) at :math:`j/M + s`.

    ``values`` has ``N`` samples; ``shift`` :math:`s` is in units of the period. The interpolant
    is :math:`(1/N)[F_0 + 2\,\mathrm{Re}\sum_{0<k<N/2} F_k e^{2\pi i k y} + F_{N/2}
    \cos(\pi N y)]` (DFT :math:`F`; the Nyquist term only for even ``N``). Modes not representable
    on ``M`` points (:math:`k \ge M/2` when ``M < N``) are dropped.
    """
    n_in = values.shape[-1]
    spec = np.fft.rfft(values)
    k = np.arange(spec.shape[-1])
    spec = spec * np.exp(TWO_PI * 1j * k * (shift % 1.0))
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    if n_out >= n_in:
        out[: spec.shape[-1]] = spec
        if n_in % 2 == 0 and n_out > n_in:
            out[n_in // 2] *= 0.5  # cos(pi N y) = two half-amplitude modes +-N/2
    else:
        keep = (n_out + 1) // 2  # modes k < M/2
        out[:keep] = spec[:keep]
    return np.fft.irfft(out, n=n_out) * (n_out / n_in)


# --------------------------------------------------------------------------------------------
# Störmer–Verlet for Hamiltonian chains
# --------------------------------------------------------------------------------------------


def _verlet_inplace(
    r: np.ndarray, p: np.ndarray, bond: Bond, dt: float, n_steps: int, broken: np.ndarray
) -> None:
    """Advance ``(r, p)`` (shape ``(B, N)``) by ``n_steps`` Verlet steps in place.

    Rows whose strain reaches ``bond.max_strain`` are flagged in ``broken`` and set to zero (they
    then stay at rest; the other rows are unaffected: every operation is row-wise).
    """
    limit = bond.max_strain
    half = 0.5 * dt
    kick = np.empty_like(p)
    drift = np.empty_like(r)

    def tension() -> np.ndarray:
        if limit is not None:
            over = (np.abs(r) >= limit).any(axis=-1)
            if over.any():
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
    _verlet_inplace(r, p, bond, float(dt), int(n_steps), broken)
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

        The co-moving trigonometric interpolation of :func:`coarse_grain_to_mesh`, on a grid.
        """
        return np.array(
            [
                _shifted_resample(r, s / self.length, n_points) / self.scale
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
    if kind == "fput":
        bond: Bond = FPUTBond(stiffness=c * c, alpha=float(params["a"]) * c)
    else:
        bond = FENEBond(stiffness=c * c, max_strain=float(params["max_strain_factor"]) * eps**2)
    n_frames = _frames(float(params["t_end"]), float(params["frame_dt"]))
    frame_lattice = float(params["frame_dt"]) / eps**3
    spf = params["steps_per_frame"]
    if spf is None:
        courant = float(params["courant"])
        if not courant > 0:
            raise ValueError(f"{kind}: courant must be > 0, got {courant!r}")
        spf = math.ceil(frame_lattice * c / courant)
    spf = int(spf)
    if spf < 1:
        raise ValueError(f"{kind}: steps_per_frame must be >= 1, got {spf}")
    return _HamiltonianSetup(
        bond, eps, c, frame_lattice / spf, spf, n_frames, float(params["frame_dt"]), length, n_chain
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
    """Integrate a batch ``u0`` of shape ``(B, N)``; return strains, momenta, energies, broken."""
    r, p = _hamiltonian_initial_state(np.atleast_2d(u0), setup)
    broken = np.zeros(r.shape[0], dtype=bool)
    if setup.bond.max_strain is not None:
        broken |= (np.abs(r) >= setup.bond.max_strain).any(axis=-1)
        r[broken] = 0.0
        p[broken] = 0.0
    strains, momenta = [r.copy()], [p.copy()]
    for _ in range(setup.n_frames):
        _verlet_inplace(r, p, setup.bond, setup.dt, setup.steps_per_frame, broken)
        strains.append(r.copy())
        momenta.append(p.copy())
    strains_a = np.stack(strains, axis=1)
    momenta_a = np.stack(momenta, axis=1)
    energies = np.zeros(strains_a.shape[:2])
    ok = ~broken
    energies[ok] = _hamiltonian_energy(setup.bond, strains_a[ok], momenta_a[ok])
    return strains_a, momenta_a, energies, broken


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


def fput_chain(
    *,
    seed: int | None = None,
    u0: np.ndarray | None = None,
    n_chain: int = 128,
    length: float = TWO_PI,
    a: float = 1.0,
    b: float = 0.05,
    t_end: float = 1.0,
    frame_dt: float = 1e-2,
    steps_per_frame: int | None = None,
    courant: float = 0.1,
    amplitude: float = 1.0,
    max_wavenumber: int = 5,
) -> ChainTrajectory:
    r"""Integrate a periodic FPUT chain in the KdV scaling (see the module docstring).

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
        KdV coefficients: :math:`c = 24 b`, :math:`\alpha = a c`. The paper does not state them;
        ``a = 1, b = 0.05`` are femeso's choice.
    t_end, frame_dt
        Final slow time and slow time between saved frames (paper: 1.0 and 1e-2).
    steps_per_frame
        Verlet steps per frame; default :math:`\lceil c\,\Delta t_\text{frame} / (\varepsilon^3
        \,\text{courant})\rceil`, i.e. :math:`c\,\Delta t \le` ``courant`` (the highest lattice
        frequency is :math:`2c`; Verlet is stable for :math:`c\,\Delta t < 1`).
    courant
        See ``steps_per_frame``.
    amplitude, max_wavenumber
        Standard deviation and largest wavenumber of the random initial profile.

    Returns
    -------
    ChainTrajectory
        Strains, momenta and the exact discrete Hamiltonian at each saved time.

    """
    params = _locals_params(fput_chain, locals())
    setup = _hamiltonian_setup("fput", params)
    prof, _ = _initial_profile("fput", seed, u0, params)
    strains, momenta, energies, _ = _run_hamiltonian(prof, setup)
    return _hamiltonian_trajectory("fput", setup, strains[0], momenta[0], energies[0], params)


def fene_chain(
    *,
    seed: int | None = None,
    u0: np.ndarray | None = None,
    n_chain: int = 209,
    length: float = TWO_PI,
    b: float = 0.05,
    max_strain_factor: float = 50.0,
    t_end: float = 0.5,
    frame_dt: float = 5e-3,
    steps_per_frame: int | None = None,
    courant: float = 0.1,
    amplitude: float = 1.0,
    max_wavenumber: int = 5,
) -> ChainTrajectory:
    r"""Integrate a periodic FENE chain in the co-moving slow scaling (see the module docstring).

    Bond tension :math:`H r / (1 - (r/R)^2)` with :math:`H = c^2`, :math:`c = 24 b` and
    :math:`R` = ``max_strain_factor`` :math:`\varepsilon^2` (paper: 50, ``n_chain = 209``,
    :math:`T = 0.5`, frames every 5e-3). The other parameters are those of :func:`fput_chain`.

    Returns
    -------
    ChainTrajectory
        Strains, momenta and the exact discrete Hamiltonian at each saved time.

    Raises
    ------
    BondBreakError
        If a strain reaches :math:`R` (initially or at any Verlet step): the sample is rejected.

    """
    params = _locals_params(fene_chain, locals())
    setup = _hamiltonian_setup("fene", params)
    prof, _ = _initial_profile("fene", seed, u0, params)
    strains, momenta, energies, broken = _run_hamiltonian(prof, setup)
    if broken[0]:
        raise BondBreakError(
            f"fene chain (seed {seed!r}): a strain reached R = {setup.bond.max_strain:.6g} "
            f"({max_strain_factor} eps^2); the sample is rejected"
        )
    return _hamiltonian_trajectory("fene", setup, strains[0], momenta[0], energies[0], params)


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
    :math:`\varepsilon c t`). Their periodic trigonometric interpolant (the band-limited Fourier
    series through the ``N`` samples, the Nyquist mode as a cosine) is evaluated at the vertices
    :math:`\xi_j = jL/M` of ``PeriodicIntervalMesh(M, L)`` and written into P1 through each
    rank's vertex coordinates; for ``M < N`` the modes :math:`|k| \ge M/2` are dropped. The
    result does not depend on the number of ranks.

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
    grid = _shifted_resample(r, float(shift) / length, n_points) / scale
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
        strains, momenta, energies, broken = _run_hamiltonian(
            np.array([prof for _, prof in batch]), setup
        )
        for row, (i, _) in enumerate(batch):
            if broken[row]:
                resampled[i] += 1
                if resampled[i] > max_resamples:
                    raise BondBreakError(
                        f"{kind} chain {i} (seed {seed}): {max_resamples} resampled initial "
                        f"conditions all reached R = {setup.bond.max_strain:.6g}; lower amplitude"
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
    """Generate a dataset of coarse-grained chain trajectories on a periodic interval mesh.

    Each trajectory is a microscopic chain (:func:`fput_chain`, :func:`fene_chain` or
    :func:`dissipative_chain`, with the paper's random initial profile) coarse-grained at every
    saved time by :func:`coarse_grain_to_mesh` onto P1 of ``PeriodicIntervalMesh(n_points, L)``.
    Trajectory ``i`` uses the random stream ``SeedSequence(seed).spawn(...)[i]`` (initial profile,
    resamples, noise), so it depends on ``(seed, i)`` and the parameters only. The chains are
    shared out round-robin over the ranks of ``comm``, integrated (FPUT/FENE in batches of
    ``batch_size``, vectorised) and their vertex values gathered on every rank.

    A FENE sample whose strain reaches ``R`` is rejected and replaced by a new initial profile
    drawn from the same trajectory's stream (at most ``max_resamples`` times, then
    :class:`BondBreakError`); the count is kept in the trajectory's metadata (``"resampled"``).

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
        Largest number of rejected FENE samples per trajectory.
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
    bar = None
    if progress and MPI.COMM_WORLD.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), desc=f"femeso {kind} chains", unit="chain")
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
