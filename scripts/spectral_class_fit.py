"""Best fit of the local conservative member of the class to periodic 1-D data, spectrally.

For chain data (FPUT, FENE), no mesoscopic equation is known, so what a member of femeso's
conservative class *can* reach on the data is not obvious. This script fits, by nonlinear least
squares on one-step predictions over the first training frames, the member

    u_t = d_x( P(u) ) + d3 u_xxx,      P(u) = sum_k p_k u^k   (k = 1 .. degree),

which is du/dt = W dV/du with W = -c d_x, V = int F(u) + kappa/2 |u_x|^2 and c F' = -P, c kappa = d3
(femeso's model with a polynomial density), on the data's own periodic grid with exact Fourier
derivatives and the implicit midpoint rule at the data step (femeso's scheme in time; the spatial
discretisation is spectral, not femeso's P1). It prints the fitted coefficients and the relative
L2 errors of rollouts from the test trajectories' first frames at steps 1..5, the femeso table's
measure. A femeso model far above these numbers misses something the class can represent.

Used to find FENE's problem (docs/results.md, "FENE chain"): this fit reaches 2.9e-4 -> 5.2e-4
where the network-only femeso model had 1.69e-3 -> 6.42e-3, because P(u) ~ -5.3 u^3 / c makes
F ~ -1.3 u^4, which a bounded network follows only approximately.

Usage::

    python scripts/spectral_class_fit.py experiments/fene.toml [--frames 20] [--degree 5]

The job's data must exist (``femeso generate CONFIG``).
"""

from __future__ import annotations

import argparse
import logging

import firedrake as fd
import numpy as np
from scipy.optimize import least_squares

from femeso import jobs
from femeso.config import load_config

logger = logging.getLogger("femeso.spectral_class_fit")


def grid_arrays(dataset) -> np.ndarray:
    """Return the states as ``(trajectories, frames, points)``, points sorted by position."""
    V = dataset.space
    x = fd.Function(V).interpolate(fd.SpatialCoordinate(V.mesh())[0]).dat.data_ro
    order = np.argsort(x)
    return np.array([[s.dat.data_ro[order] for s in t.states] for t in dataset])


class SpectralMember:
    """The member u_t = d_x P(u) + d3 u_xxx on a periodic grid, stepped by implicit midpoint."""

    def __init__(self, n_points: int, length: float, dt: float, degree: int) -> None:
        self.ik = 1j * 2 * np.pi * np.fft.fftfreq(n_points, d=length / n_points)
        self.dt, self.degree = dt, degree

    def _nonlinear(self, v_hat: np.ndarray, p: np.ndarray) -> np.ndarray:
        u = np.real(np.fft.ifft(v_hat, axis=-1))
        flux = sum(p[k - 2] * u**k for k in range(2, self.degree + 1))
        return self.ik * np.fft.fft(flux, axis=-1)

    def step(self, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """One midpoint step from states ``u`` (rows) with ``theta = (d3, p1, .., p_degree)``."""
        d3, p1, p = theta[0], theta[1], theta[2:]
        linear = p1 * self.ik + d3 * self.ik**3
        h = self.dt
        explicit, implicit = 1 + 0.5 * h * linear, 1 - 0.5 * h * linear
        v = np.fft.fft(u, axis=-1)
        w = v.copy()
        for _ in range(50):  # fixed point in the (non-stiff) nonlinear part
            new = (explicit * v + h * self._nonlinear(0.5 * (v + w), p)) / implicit
            done = np.max(np.abs(new - w)) <= 1e-13 * np.max(np.abs(new))
            w = new
            if done:
                break
        return np.real(np.fft.ifft(w, axis=-1))


def relative_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Relative L2 error of each row of ``a`` against ``b``."""
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


def main(argv: list[str] | None = None) -> int:
    """Fit the member to the job's training data and print its test rollout errors."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the job's TOML (periodic 1-D data)")
    parser.add_argument("--frames", type=int, default=20, help="training frames per trajectory")
    parser.add_argument("--degree", type=int, default=5, help="degree of P (>= 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = load_config(args.config)
    if config.mesh.name != "periodic_interval":
        parser.error(f"{args.config}: needs mesh.name = 'periodic_interval'")
    if args.degree < 2 or args.frames < 1:
        parser.error("--degree must be >= 2 and --frames >= 1")
    space = jobs.build_space(config)
    data = jobs.load_data(config, space)
    train, test = grid_arrays(data["train"]), grid_arrays(data["test"])
    dt = float(data["train"][0].times[1] - data["train"][0].times[0])
    member = SpectralMember(train.shape[-1], config.mesh.length, dt, args.degree)
    frames = min(args.frames, train.shape[1] - 1)
    u0 = train[:, :frames].reshape(-1, train.shape[-1])
    u1 = train[:, 1 : frames + 1].reshape(-1, train.shape[-1])
    # linear least squares on centred differences for the start, then the one-step fit
    ik = member.ik

    def derivative(u, power=1):
        return np.real(np.fft.ifft(ik**power * np.fft.fft(u, axis=-1), axis=-1))

    mid = train[:, 1:frames]
    columns = [derivative(mid, 3), derivative(mid)] + [
        derivative(mid**k) for k in range(2, args.degree + 1)
    ]
    rate = (train[:, 2 : frames + 1] - train[:, : frames - 1]) / (2 * dt)
    start = np.linalg.lstsq(
        np.stack([c.ravel() for c in columns], axis=1), rate.ravel(), rcond=None
    )[0]
    fit = least_squares(lambda th: (member.step(u0, th) - u1).ravel(), start, x_scale="jac")
    theta = fit.x
    logger.info("d3 = %.6g, p_1..p_%d = %s", theta[0], args.degree, np.array2string(theta[1:]))
    u, errors = test[:, 0], []
    for k in range(1, 6):
        u = member.step(u, theta)
        e = relative_error(u, test[:, k])
        errors.append(f"{e.mean():.2e} ± {e.std():.1e}")
    logger.info("test rollouts, steps 1..5 (mean ± std): %s", "  ".join(errors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
