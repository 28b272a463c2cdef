r"""Write the paper's datasets (FPUT, FENE, Allen–Cahn 1-D) in the paper's exact file layout.

Data that femeso's own generators did not make: NumPy (and h5py) only, no Firedrake. One HDF5
file per dataset, as the paper's public code writes it (REFERENCE.md, "Protocol details fixed by
the paper's public code"):

* ``u_sol_all``: float32, shape ``(N, frames, 256, 1)`` (trajectories, frames, grid points, fields);
* ``t_coord``: float64, shape ``(frames,)``, the frame times ``k * dt``;
* ``x_coord``: float64, shape ``(256,)``, ``x_j = j * 2 pi / 256`` (0 included, 2 pi excluded);

plus root attributes describing the protocol (generator, seed, parameters, resampled count).
Trajectory ``i`` uses the random stream ``numpy.random.SeedSequence(seed).spawn(N)[i]``, so it
depends on ``(seed, i)`` only, not on ``N`` or the batch size (the paper's FPUT/FENE launchers
use seed 0). The FPUT/FENE draws are those of :mod:`femeso.data.chains`, so the files agree with
``femeso.data.chains.generate_chain_dataset`` trajectory by trajectory up to round-off.

**FPUT chain** (N_chain = 128, :math:`L = 2\pi`, :math:`\varepsilon = L/N`): strain equation
:math:`\ddot r_n = c^2(r_{n+1} - 2r_n + r_{n-1}) + \alpha(r_{n+1}^2 - 2r_n^2 + r_{n-1}^2)` with
the KdV coefficients ``a = 1``, ``b = 1/24`` (:math:`c = 24 b = 1`, :math:`\alpha = a c = 1`).
Initial profile :math:`u_0 = \sum_{j=1}^3 A_j \sin(k_j \xi + \phi_j)` with 3 distinct
:math:`k_j \in \{1..6\}`, :math:`A_j \sim U(0,1)`, :math:`\phi_j \sim U(0, 2\pi)`, sampled at
:math:`\xi_n = \varepsilon n`, centred and scaled to unit standard deviation;
:math:`r_n(0) = \varepsilon^2 u_0(\xi_n)`, :math:`\dot r_n(0) = -c\varepsilon^3 u_0'(\xi_n)`
(the right-travelling wave). Störmer–Verlet (kick-drift-kick in :math:`(r, \dot r)`) with 50
lab-time steps per slow step :math:`\Delta\tau = 10^{-3}` (:math:`\tau = \varepsilon^3 t`),
frames every 10 slow steps: :math:`\Delta t = 10^{-2}`, T = 1, 101 frames. Each frame: the
strains :math:`r_n/\varepsilon^2`, sitting at the co-moving positions
:math:`\xi_n = \varepsilon n - \varepsilon c t` (mod :math:`2\pi`), **linearly** interpolated
(periodic) to the 256 grid points. A sample with :math:`\max |r_n/\varepsilon^2| > 20` at a
saved frame (or a non-finite value) is rejected and redrawn from the trajectory's own stream.

**FENE chain** (N_chain = 209): tension :math:`H r/(1 - (r/R)^2)`, :math:`H = c^2 = 1`
(``b = 1/24``), :math:`R = 50\varepsilon^2`; slow step :math:`5\cdot10^{-4}` with 50 Verlet steps
each (the sub-step count is not in REFERENCE.md: FPUT's is used; :math:`c\,h = 0.37`), frames
every 10 slow steps: :math:`\Delta t = 5\cdot10^{-3}`, **51 frames** (REFERENCE.md's frame count;
they span :math:`\tau \in [0, 0.25]`: its "T = 0.5" and "51 frames at 5e-3" disagree, and
``--frames 101`` gives T = 0.5). A sample with :math:`|r_n/R| > 0.9` at any Verlet step is
rejected and redrawn. Wavenumbers 1..6, unit standard deviation, as for FPUT.

**Allen–Cahn 1-D**: :math:`u_t = u_{xx} + (u - u^3)/\varepsilon^2`, :math:`\varepsilon = 0.1`,
periodic :math:`[0, 2\pi)`, 256 points, frames every :math:`10^{-3}` up to T = 0.1 (101 frames).
Initial condition: :math:`\sum_{j=1}^3 A_j \sin(k_j x + \phi_j)` with 3 distinct
:math:`k_j \in \{1..10\}`, :math:`A_j \sim U(0,1)`, :math:`\phi_j \sim U(0,2\pi)`, shifted and
scaled so that its minimum on the grid is -1 and its maximum 1 (exactly). Solver: Fourier
pseudo-spectral (the 128 modes ``0..127`` of the 256-point grid, the Nyquist mode kept at zero,
like a 256-point real Fourier basis) with the cubic nonlinearity evaluated on 512 points (2x
padding: no aliasing), and ETDRK4 (Cox & Matthews; coefficients by Kassam & Trefethen's contour
integrals) with ``--steps-per-frame`` internal steps per frame (default 20: :math:`h = 5\cdot
10^{-5}`). Accuracy, measured by halving h (:func:`allen_cahn_self_convergence`, 8 initial
conditions, seed 0, the whole run to T = 0.1, max over frames and points of
:math:`|u_h - u_{h/2}|`): h = 2e-4 -> 8.1e-9, 1e-4 -> 5.1e-10, 5e-5 -> 3.2e-11, 2.5e-5 -> 2.0e-12
(round-off floor 1.5e-12), observed orders 3.98, 3.99, 4.02: the default step is accurate to
about 3e-11 in time, far below the float32 rounding of the file (6e-8) and the paper's errors
(1e-3). Space: the same runs on 512 points (the initial data are trigonometric polynomials)
agree at the 256 points to 1.1e-12; the solution's Fourier coefficients at :math:`|k| \ge 100`
stay below 3.4e-10 of the largest (interfaces of width :math:`\sqrt2\varepsilon = 0.14` over
about 6 grid points).

Speed (one core of a shared 2-core AMD EPYC, all trajectories in one batch): 300 FPUT
trajectories 11 s, 300 FENE 15 s, 300 Allen–Cahn 21 s (measured; linear in N).

Usage::

    python scripts/paper_data.py fput --n 300 --seed 0 -o data/fput_paper.h5
    python scripts/paper_data.py fene --n 1000              # data/fene_paper.h5
    python scripts/paper_data.py allen_cahn_1d --n 1000 --overwrite

Writes atomically (a temporary file in the target directory, renamed when complete) and refuses
to overwrite an existing file without ``--overwrite``. User errors are one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

TWO_PI = 2.0 * math.pi
N_POINTS = 256
ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("fput", "fene", "allen_cahn_1d")


# --------------------------------------------------------------------------------------------
# grid and random initial profiles
# --------------------------------------------------------------------------------------------


def grid(n_points: int = N_POINTS, length: float = TWO_PI) -> np.ndarray:
    """Return the paper's periodic grid ``x_j = j L / n`` (0 included, ``L`` excluded)."""
    return np.arange(n_points) * (length / n_points)


def sine_modes(
    rng: np.random.Generator, x: np.ndarray, *, max_wavenumber: int, n_modes: int = 3
) -> np.ndarray:
    r"""Return :math:`\sum_j A_j \sin(k_j x + \phi_j)` at ``x`` (period :math:`2\pi`).

    Draws, in this order, ``n_modes`` distinct wavenumbers out of ``1..max_wavenumber``
    (``rng.choice`` without replacement), the amplitudes :math:`U(0,1)` and the phases
    :math:`U(0, 2\pi)` (the order of :func:`femeso.data.chains.random_sine_profile`).
    """
    k = rng.choice(np.arange(1, max_wavenumber + 1), size=n_modes, replace=False)
    a = rng.uniform(0.0, 1.0, size=n_modes)
    phi = rng.uniform(0.0, TWO_PI, size=n_modes)
    return np.sin(np.outer(x, k) + phi) @ a


def chain_profile(rng: np.random.Generator, n_chain: int, max_wavenumber: int) -> np.ndarray:
    """Return a chain's initial profile at ``xi_n = 2 pi n / N``: 3 sine modes, unit std."""
    while True:  # redrawn only if the samples are constant (probability zero)
        u = sine_modes(rng, grid(n_chain), max_wavenumber=max_wavenumber)
        u -= u.mean()
        std = u.std()
        if std > 1e-12:
            return u / std


def allen_cahn_initial(rng: np.random.Generator, n_points: int = N_POINTS) -> np.ndarray:
    """Return the paper's Allen–Cahn initial condition: 3 of the modes 1..10, spanning [-1, 1].

    The sine sum is shifted and scaled so that its minimum on the grid is exactly -1 and its
    maximum exactly 1.
    """
    while True:
        u = sine_modes(rng, grid(n_points), max_wavenumber=10)
        lo, hi = u.min(), u.max()
        if hi - lo > 1e-12:
            out = 2.0 * (u - lo) / (hi - lo) - 1.0
            out[np.argmax(u)] = 1.0  # exact already (x / x == 1); made explicit
            out[np.argmin(u)] = -1.0
            return out


def streams(seed: int, n: int) -> list[np.random.Generator]:
    """Return the trajectories' random generators: child ``i`` of ``SeedSequence(seed)``."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


# --------------------------------------------------------------------------------------------
# Hamiltonian chains
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainProtocol:
    """The paper's protocol of one chain dataset (REFERENCE.md)."""

    name: str
    n_chain: int
    bond: str  # "fput" or "fene"
    a: float = 1.0  # FPUT: alpha = a c
    b: float = 1.0 / 24.0  # c = 24 b
    max_strain_factor: float = 50.0  # FENE: R = factor * eps^2
    slow_dt: float = 1e-3
    substeps: int = 50  # Verlet steps per slow step
    save_every: int = 10  # slow steps per frame
    frames: int = 101
    max_wavenumber: int = 6
    max_abs_u: float | None = None  # FPUT: reject max |r / eps^2| > this at a frame
    max_strain_ratio: float | None = None  # FENE: reject max |r / R| > this at any step
    length: float = TWO_PI

    @property
    def eps(self) -> float:
        """Return epsilon = L / N."""
        return self.length / self.n_chain

    @property
    def speed(self) -> float:
        """Return :math:`c = 24 b`."""
        return 24.0 * self.b

    @property
    def frame_dt(self) -> float:
        """Return the slow time between frames."""
        return self.slow_dt * self.save_every

    @property
    def lattice_dt(self) -> float:
        """Return the Verlet step in lab time: ``slow_dt / eps^3 / substeps``."""
        return self.slow_dt / self.eps**3 / self.substeps


FPUT = ChainProtocol("fput", 128, "fput", slow_dt=1e-3, frames=101, max_abs_u=20.0)
FENE = ChainProtocol("fene", 209, "fene", slow_dt=5e-4, frames=51, max_strain_ratio=0.9)


def _spectral_derivative(values: np.ndarray, length: float) -> np.ndarray:
    """Return the derivative of periodic samples (rows; no Nyquist mode: exact here)."""
    n = values.shape[-1]
    spec = np.fft.rfft(values, axis=-1)
    k = np.arange(spec.shape[-1]) * (TWO_PI / length)
    if n % 2 == 0:
        k[-1] = 0.0
    return np.fft.irfft(1j * k * spec, n=n, axis=-1)


def linear_periodic_interpolation(
    values: np.ndarray, shift: float, n_points: int, length: float = TWO_PI
) -> np.ndarray:
    r"""Interpolate chain values in the co-moving frame linearly to ``n_points`` grid points.

    Value ``n`` (of ``N``, last axis) sits at :math:`\xi_n = nL/N - s` (mod :math:`L`,
    :math:`s` = ``shift``); the periodic piecewise-linear interpolant through them is evaluated
    at :math:`x_j = jL/M` (``numpy.interp(x, xi, u, period=L)``, vectorised over rows).
    """
    n = values.shape[-1]
    frac = (shift / length) % 1.0
    y = (np.arange(n_points) * n) / n_points + frac * n  # x_j + s in particle units
    i0 = np.floor(y)
    w = y - i0
    i0 = i0.astype(np.int64) % n
    i1 = (i0 + 1) % n
    return values[..., i0] * (1.0 - w) + values[..., i1] * w


def _chain_force(proto: ChainProtocol) -> Callable[[np.ndarray], np.ndarray]:
    c = proto.speed
    if proto.bond == "fput":
        k2, alpha = c * c, proto.a * c
        return lambda r: (k2 + alpha * r) * r
    h_coef, inv_r = c * c, 1.0 / (proto.max_strain_factor * proto.eps**2)
    return lambda r: h_coef * r / (1.0 - (r * inv_r) ** 2)


def integrate_chains(
    u0: np.ndarray, proto: ChainProtocol, n_points: int = N_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    r"""Integrate a batch of chains and coarse-grain every frame to the grid.

    Parameters
    ----------
    u0
        Initial profiles :math:`u_0(\varepsilon n)`, shape ``(B, N_chain)``.
    proto
        The protocol (bond, steps, frames, rejection rule).
    n_points
        Grid points of the output.

    Returns
    -------
    grid_values : numpy.ndarray
        ``u`` on the grid, shape ``(B, frames, n_points)`` (rows of rejected samples are
        meaningless).
    rejected : numpy.ndarray
        Boolean, shape ``(B,)``: the samples the protocol rejects.

    """
    u0 = np.atleast_2d(np.asarray(u0, dtype=float))
    eps, c, h = proto.eps, proto.speed, proto.lattice_dt
    r = eps**2 * u0
    v = -c * eps**3 * _spectral_derivative(u0, proto.length)  # dr/dt
    force = _chain_force(proto)
    limit = None
    if proto.max_strain_ratio is not None:
        limit = proto.max_strain_ratio * proto.max_strain_factor * eps**2
    rejected = np.zeros(r.shape[0], dtype=bool)
    out = np.empty((r.shape[0], proto.frames, n_points))
    steps = proto.save_every * proto.substeps
    lap = np.empty_like(r)

    def laplacian(f: np.ndarray) -> np.ndarray:
        np.subtract(f[:, 2:], f[:, 1:-1], out=lap[:, 1:-1])
        lap[:, 1:-1] -= f[:, 1:-1]
        lap[:, 1:-1] += f[:, :-2]
        lap[:, 0] = f[:, 1] - 2.0 * f[:, 0] + f[:, -1]
        lap[:, -1] = f[:, 0] - 2.0 * f[:, -1] + f[:, -2]
        return lap

    def check(r: np.ndarray) -> None:
        if limit is not None and not np.abs(r).max() <= limit:  # also NaN
            over = ~(np.abs(r) <= limit).all(axis=1)
            rejected[over] = True
            r[over] = 0.0
            v[over] = 0.0

    def save(k: int) -> None:
        u = r / eps**2
        bound = np.inf if proto.max_abs_u is None else proto.max_abs_u
        bad = ~(np.abs(u) <= bound).all(axis=1) | ~np.isfinite(v).all(axis=1)  # also NaN/Inf
        rejected[bad] = True
        r[bad] = 0.0
        v[bad] = 0.0
        u[bad] = 0.0
        shift = math.fmod(eps * c * (k * steps * h), proto.length)
        out[:, k] = linear_periodic_interpolation(u, shift, n_points, proto.length)

    check(r)
    save(0)
    # Kick-drift-kick; the half kicks between two steps fused to one (r is saved, not v).
    with np.errstate(over="ignore", invalid="ignore"):
        f = force(r)
        v += (0.5 * h) * laplacian(f)
        for k in range(1, proto.frames):
            for _ in range(steps):
                r += h * v
                check(r)
                f = force(r)
                v += h * laplacian(f)
            save(k)
    return out, rejected


def chain_dataset(
    proto: ChainProtocol,
    n: int,
    seed: int,
    *,
    batch_size: int = 1000,
    max_resamples: int = 20,
    n_points: int = N_POINTS,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Return ``n`` chain trajectories on the grid, shape ``(n, frames, n_points)``, and info.

    Rejected samples are redrawn from the trajectory's own stream (at most ``max_resamples``
    times, then ``RuntimeError``). ``info`` holds the number of resampled initial profiles.
    """
    rngs = streams(seed, n)
    out = np.empty((n, proto.frames, n_points))
    pending = [(i, chain_profile(rngs[i], proto.n_chain, proto.max_wavenumber)) for i in range(n)]
    tries = [0] * n
    resampled = 0
    while pending:
        batch, pending = pending[:batch_size], pending[batch_size:]
        values, rejected = integrate_chains(np.array([p for _, p in batch]), proto, n_points)
        for row, (i, _) in enumerate(batch):
            if not rejected[row]:
                out[i] = values[row]
                continue
            tries[i] += 1
            resampled += 1
            if tries[i] > max_resamples:
                raise RuntimeError(
                    f"{proto.name}: trajectory {i} (seed {seed}) rejected {max_resamples} times"
                )
            pending.append((i, chain_profile(rngs[i], proto.n_chain, proto.max_wavenumber)))
    return out, {"resampled": resampled}


# --------------------------------------------------------------------------------------------
# Allen–Cahn 1-D: Fourier pseudo-spectral + ETDRK4
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllenCahnProtocol:
    """The paper's Allen–Cahn 1-D protocol (REFERENCE.md)."""

    name: str = "allen_cahn_1d"
    epsilon: float = 0.1
    frame_dt: float = 1e-3
    frames: int = 101
    n_points: int = N_POINTS
    length: float = TWO_PI
    steps_per_frame: int = 20  # ETDRK4 steps per frame
    padding: int = 2  # nonlinear terms on padding * n_points points


ALLEN_CAHN_1D = AllenCahnProtocol()


def _etdrk4_coefficients(lin: np.ndarray, h: float, contour: int = 64) -> tuple[np.ndarray, ...]:
    """Return ``E, E2, Q, f1, f2, f3`` of ETDRK4 for the diagonal linear operator ``lin``.

    The phi-functions by the mean over a circle of radius 1 around ``h * lin`` (Kassam &
    Trefethen 2005), which avoids their cancellation near 0.
    """
    z = h * lin
    roots = np.exp(1j * np.pi * (np.arange(contour) + 0.5) / (contour / 2))
    lr = z[:, None] + roots[None, :]
    ex = np.exp(lr)
    q = h * np.real(np.mean((np.exp(lr / 2) - 1.0) / lr, axis=1))
    f1 = h * np.real(np.mean((-4.0 - lr + ex * (4.0 - 3.0 * lr + lr * lr)) / lr**3, axis=1))
    f2 = h * np.real(np.mean((2.0 + lr + ex * (-2.0 + lr)) / lr**3, axis=1))
    f3 = h * np.real(np.mean((-4.0 - 3.0 * lr - lr * lr + ex * (4.0 - lr)) / lr**3, axis=1))
    return np.exp(z), np.exp(z / 2), q, f1, f2, f3


def allen_cahn_solve(
    u0: np.ndarray, proto: AllenCahnProtocol = ALLEN_CAHN_1D, *, steps_per_frame: int | None = None
) -> np.ndarray:
    r"""Solve :math:`u_t = u_{xx} + (u - u^3)/\varepsilon^2` for a batch of initial conditions.

    Parameters
    ----------
    u0
        Initial values on the periodic grid, shape ``(B, n_points)`` (``n_points`` even).
    proto
        Epsilon, frame step, frames, padding.
    steps_per_frame
        ETDRK4 steps per frame (default ``proto.steps_per_frame``).

    Returns
    -------
    numpy.ndarray
        Shape ``(B, frames, n_points)``; frame 0 is ``u0`` itself.

    """
    u0 = np.atleast_2d(np.asarray(u0, dtype=float))
    n = u0.shape[-1]
    if n % 2:
        raise ValueError(f"allen_cahn_solve: an even number of points is needed, got {n}")
    spf = proto.steps_per_frame if steps_per_frame is None else int(steps_per_frame)
    h = proto.frame_dt / spf
    k = np.arange(n // 2 + 1) * (TWO_PI / proto.length)
    keep = np.ones(n // 2 + 1)
    keep[n // 2] = 0.0  # no Nyquist mode (a real Fourier basis of n points has modes < n/2)
    lin = -k * k
    e, e2, q, f1, f2, f3 = _etdrk4_coefficients(lin, h)
    big = proto.padding * n
    inv_eps2 = 1.0 / proto.epsilon**2
    pad = np.zeros((u0.shape[0], big // 2 + 1), dtype=complex)
    up, down = big / n, n / big

    def nonlinear(vh: np.ndarray) -> np.ndarray:
        pad[:, : n // 2 + 1] = vh * up
        u = np.fft.irfft(pad, n=big, axis=-1)
        return np.fft.rfft((u - u * u * u) * inv_eps2, axis=-1)[:, : n // 2 + 1] * (down * keep)

    v = np.fft.rfft(u0, axis=-1) * keep
    out = np.empty((u0.shape[0], proto.frames, n))
    out[:, 0] = u0
    for frame in range(1, proto.frames):
        for _ in range(spf):
            nv = nonlinear(v)
            a = e2 * v + q * nv
            na = nonlinear(a)
            b = e2 * v + q * na
            nb = nonlinear(b)
            c = e2 * a + q * (2.0 * nb - nv)
            nc = nonlinear(c)
            v = e * v + f1 * nv + 2.0 * f2 * (na + nb) + f3 * nc
        out[:, frame] = np.fft.irfft(v, n=n, axis=-1)
    return out


def allen_cahn_dataset(
    n: int,
    seed: int,
    *,
    proto: AllenCahnProtocol = ALLEN_CAHN_1D,
    steps_per_frame: int | None = None,
    batch_size: int = 1000,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Return ``n`` Allen–Cahn trajectories, shape ``(n, frames, n_points)``, and info."""
    u0 = np.array([allen_cahn_initial(rng, proto.n_points) for rng in streams(seed, n)])
    out = np.empty((n, proto.frames, proto.n_points))
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        out[start:stop] = allen_cahn_solve(u0[start:stop], proto, steps_per_frame=steps_per_frame)
    return out, {"resampled": 0}


def allen_cahn_self_convergence(
    n: int = 8, seed: int = 0, steps: Sequence[int] = (10, 20, 40, 80, 160)
) -> list[tuple[float, float]]:
    """Return ``(h, max |u_h - u_{h/2}|)`` over all frames for each ``steps`` per frame.

    ``steps`` doubles from one entry to the next (each entry is compared with the next).
    """
    u0 = np.array([allen_cahn_initial(rng) for rng in streams(seed, n)])
    runs = [allen_cahn_solve(u0, steps_per_frame=s) for s in steps]
    return [
        (ALLEN_CAHN_1D.frame_dt / s, float(np.abs(a - b).max()))
        for s, a, b in zip(steps, runs[:-1], runs[1:], strict=False)
    ]


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def write_paper_file(
    path: str | Path,
    u: np.ndarray,
    t: np.ndarray,
    x: np.ndarray,
    *,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``u_sol_all`` (float32, ``(N, frames, points, 1)``), ``t_coord``, ``x_coord``.

    Atomic: written to a temporary file in the target directory, then renamed. ``attrs`` are
    stored as root attributes (non-scalar values as JSON strings).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    ValueError
        On inconsistent shapes or non-finite values.

    """
    import h5py

    path = Path(path)
    u = np.asarray(u)
    if u.ndim == 3:
        u = u[..., None]
    if u.ndim != 4 or u.shape[1] != len(t) or u.shape[2] != len(x):
        raise ValueError(f"u {u.shape}, t {np.shape(t)}, x {np.shape(x)} do not match")
    if not np.isfinite(u).all():
        raise ValueError("u contains NaN/Inf values")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (use --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("u_sol_all", data=u.astype(np.float32))
            h5.create_dataset("t_coord", data=np.asarray(t, dtype=np.float64))
            h5.create_dataset("x_coord", data=np.asarray(x, dtype=np.float64))
            for key, value in (attrs or {}).items():
                if isinstance(value, str | int | float | bool):
                    h5.attrs[key] = value
                else:
                    h5.attrs[key] = json.dumps(value)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def make_dataset(
    name: str,
    n: int,
    seed: int,
    *,
    frames: int | None = None,
    steps_per_frame: int | None = None,
    batch_size: int = 1000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Return ``(u, t_coord, x_coord, attrs)`` of one of the paper's datasets.

    Parameters
    ----------
    name
        ``"fput"``, ``"fene"`` or ``"allen_cahn_1d"``.
    n, seed
        Number of trajectories and the dataset's seed.
    frames
        Override the protocol's number of frames (e.g. 101 for FENE up to T = 0.5).
    steps_per_frame
        Allen–Cahn only: ETDRK4 steps per frame (default 20).
    batch_size
        Trajectories integrated together (does not change the results).

    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got {n}, {batch_size}")
    if frames is not None and frames < 2:
        raise ValueError(f"need frames >= 2, got {frames}")
    if name in ("fput", "fene"):
        proto = FPUT if name == "fput" else FENE
        if frames is not None:
            proto = ChainProtocol(**dict(asdict(proto), frames=int(frames)))
        if steps_per_frame is not None:
            raise ValueError("--steps-per-frame is for allen_cahn_1d (the chains: 500 per frame)")
        u, info = chain_dataset(proto, n, seed, batch_size=batch_size)
        params: dict[str, Any] = asdict(proto)
        dt = proto.frame_dt
    elif name == "allen_cahn_1d":
        proto_ac = ALLEN_CAHN_1D
        if frames is not None:
            proto_ac = AllenCahnProtocol(**dict(asdict(proto_ac), frames=int(frames)))
        if steps_per_frame is not None:
            if steps_per_frame < 1:
                raise ValueError(f"need steps_per_frame >= 1, got {steps_per_frame}")
            proto_ac = AllenCahnProtocol(
                **dict(asdict(proto_ac), steps_per_frame=int(steps_per_frame))
            )
        u, info = allen_cahn_dataset(n, seed, proto=proto_ac, batch_size=batch_size)
        params = asdict(proto_ac)
        dt = proto_ac.frame_dt
    else:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {name!r}")
    t = np.arange(u.shape[1]) * dt
    attrs = {
        "generator": "femeso scripts/paper_data.py",
        "dataset": name,
        "seed": int(seed),
        "n_trajectories": int(n),
        "parameters": params,
        **info,
    }
    return u, t, grid(u.shape[2]), attrs


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(
        prog="paper_data.py",
        description="Write the paper's FPUT / FENE / Allen-Cahn 1-D datasets (HDF5 u_sol_all).",
    )
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--n", type=int, default=1000, help="trajectories (1000)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (0)")
    parser.add_argument(
        "-o", "--output", help="the HDF5 file (default: data/<dataset>_paper.h5 in the repository)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument(
        "--frames", type=int, help="frames per trajectory (default: the protocol's)"
    )
    parser.add_argument(
        "--steps-per-frame", type=int, help="allen_cahn_1d: ETDRK4 steps per frame (20)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="trajectories integrated together (1000)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Generate one dataset and write it; user errors are one line on stderr, status 2."""
    args = build_parser().parse_args(argv)
    out = Path(args.output) if args.output else ROOT / "data" / f"{args.dataset}_paper.h5"
    if out.exists() and not args.overwrite:
        print(f"paper_data.py: {out} exists (use --overwrite to replace it)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        u, t, x, attrs = make_dataset(
            args.dataset,
            args.n,
            args.seed,
            frames=args.frames,
            steps_per_frame=args.steps_per_frame,
            batch_size=args.batch_size,
        )
    except ValueError as exc:
        print(f"paper_data.py: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    attrs["generation_seconds"] = round(elapsed, 3)
    try:
        write_paper_file(out, u, t, x, attrs=attrs, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        print(f"paper_data.py: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.dataset}: {u.shape[0]} trajectories x {u.shape[1]} frames x {u.shape[2]} points "
        f"(dt = {t[1] - t[0]:.3g}, T = {t[-1]:.3g}), max |u| = {np.abs(u).max():.3g}, "
        f"{attrs['resampled']} resampled, {elapsed:.1f} s -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
