r"""The paper's own model class ("SpecOnsNet"): constant Fourier mobilities and an MLP density.

On a uniform periodic grid of :math:`N` points (1-D: :math:`n_x` points on :math:`[0, L_x)`;
2-D: :math:`n_y \times n_x` points on :math:`[0, L_x) \times [0, L_y)`), spacing
:math:`h_i = L_i / n_i` and cell volume :math:`h^d = \prod_i h_i`, the energy is

.. math::

    V(u) = h^d \sum_x \big[\tfrac12 a u_x^2 + F_\theta(u_x)\big]
         + \tfrac12 b\, \frac{h^d}{N} \sum_k |k|^2 |\hat u_k|^2,

the second term being :math:`\tfrac12 b \int |\nabla u|^2` with the gradient taken spectrally
(Parseval; :math:`\hat u = \mathrm{FFT}(u)`, :math:`k` the angular wavenumbers
:math:`2\pi j / L`). :math:`a = \mathrm{softplus}(\alpha) > 0`, :math:`b = \mathrm{softplus}(\beta)
> 0` and :math:`F_\theta` is an MLP ``1 -> width -> width -> 1`` with ``tanh`` activations. Its
slope is bounded, so :math:`\tfrac12 a u^2` dominates it at infinity and :math:`V` is coercive
for every :math:`\theta`. The grid's variational derivative (the gradient of :math:`V` divided by
:math:`h^d`) is

.. math::  \mu = \frac{\delta V}{\delta u} = a u + F_\theta'(u) - b \Delta u,
    \qquad \widehat{\Delta u}_k = -|k|^2 \hat u_k,

with :math:`F_\theta'` from ``torch.autograd.grad`` (``create_graph`` while training, so the loss
can be differentiated through it). The dynamics is the generalized Onsager form with constant
Fourier multipliers,

.. math::

    \partial_t u = -(\mathcal M + \mathcal W)\,\mu, \qquad
    \widehat{\mathcal M \mu}_k = M(k) \hat\mu_k,\ M(k) = \theta_M(k)^2 \ge 0, \qquad
    \widehat{\mathcal W \mu}_k = i\,\theta_W(k)\,\hat\mu_k,\ \theta_W(-k) = -\theta_W(k),

advanced by explicit Euler at the data step (the paper's default), optionally in ``substeps``
sub-steps of :math:`\Delta t / s`:

.. math::  u_{n+1} = u_n - \tfrac{\Delta t}{s}\,
    \mathrm{IFFT}\big[(M(k) + i\theta_W(k))\,\mathrm{FFT}(\mu(u_n))\big].

The continuous-time energy rate is :math:`\dot V = -\tfrac{h^d}{N} \sum_k M(k)|\hat\mu_k|^2 \le 0`
(:math:`\mathcal W` does no work); explicit Euler keeps this only for small enough steps.

**Multipliers on the half spectrum.** The transforms are ``rfft``/``rfftn`` (the last grid axis,
``x``, keeps :math:`k_x \ge 0`), with one parameter of :math:`\theta_M` and one of
:math:`\theta_W` per bin :math:`(k_y, k_x)` of that half spectrum (1-D: per :math:`|k|`). A bin
with :math:`0 < k_x < n_x/2` stands for itself and its conjugate :math:`(-k_y, -k_x)`, which gets
:math:`M` and :math:`-\theta_W` implicitly: the full-spectrum multiplier is Hermitian, so the
result is real, :math:`\mathcal M` is symmetric and :math:`\mathcal W` antisymmetric. The
columns :math:`k_x = 0` and (``n_x`` even) :math:`k_x = n_x/2` hold both members of each
conjugate pair :math:`(k_y, k_x), (-k_y, k_x)`; there the effective multipliers are symmetrised,
:math:`M = \tfrac12(\theta_M(k_y)^2 + \theta_M(-k_y)^2)`, and antisymmetrised,
:math:`\theta_W = \tfrac12(\theta_W(k_y) - \theta_W(-k_y))`, so :math:`\theta_W` vanishes on the
self-conjugate bins (:math:`k = 0` and the Nyquist bins) and those parameters are unused. A 1-D
grid is computed as a grid of one row (:math:`k_y = 0`): there :math:`\theta_W(0)` and, for even
``n``, :math:`\theta_W(\text{Nyquist})` are zero.

**Mass.** :math:`\tfrac{d}{dt}\sum_x u = -M(0)\sum_x \mu`: with the default
``conserve_mass=False`` :math:`M(0) = \theta_M(0)^2` is learned and :math:`\int u` is not
conserved (the paper's Allen--Cahn needs :math:`M(0) > 0`); with ``conserve_mass=True``
:math:`M(0) = 0` and every Euler step keeps :math:`\sum_x u` to rounding.

Everything is in double precision. The model's physics uses no data scale:
:meth:`SpectralOnsagerPeer.normalise` does nothing. The initial mobility
:math:`M(k) = 1/(1 + \Delta t (a_0 + b_0 |k|^2))` (:math:`a_0 = b_0 = 1`, :math:`\theta_W = 0`)
makes the untrained linear part of a step a contraction at any grid resolution.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from femeso.peers.base import Peer
from femeso.peers.nodal import NodalLayout

__all__ = ["SpectralOnsagerPeer"]


def _inverse_softplus(value: float) -> float:
    """Return ``x`` with ``softplus(x) == value`` (``value > 0``)."""
    return value + math.log(-math.expm1(-value))


class SpectralOnsagerPeer(Peer):
    r"""The paper's spectral Onsager class on a uniform periodic 1-D or 2-D grid.

    Parameters
    ----------
    layout
        The nodal layout; its DoFs must form a uniform 1-D or 2-D tensor grid on a mesh periodic
        in every direction.
    dt
        The data step (one explicit Euler step, or ``substeps`` of them).
    width
        Hidden width of the density MLP :math:`F_\theta` (two hidden layers).
    substeps
        Explicit Euler sub-steps of ``dt / substeps`` per data step.
    conserve_mass
        Fix :math:`M(0) = 0` so that :math:`\int u` is conserved (default: learned :math:`M(0)`).

    Attributes
    ----------
    theta_m, theta_w
        ``(n_y, n_x // 2 + 1)`` parameters of the multipliers on the half spectrum (``n_y = 1``
        in 1-D); see the module's documentation for how they are symmetrised.
    raw_a, raw_b
        ``a = softplus(raw_a)``, ``b = softplus(raw_b)``.
    density
        The MLP :math:`F_\theta`, ``(points, 1) -> (points, 1)``.

    """

    name = "spectral_onsager"
    label = "spectral Onsager class (paper)"

    def __init__(
        self,
        layout: NodalLayout,
        dt: float,
        *,
        width: int = 32,
        substeps: int = 1,
        conserve_mass: bool = False,
    ) -> None:
        super().__init__(layout, dt, width=width, substeps=substeps, conserve_mass=conserve_mass)
        shape = layout.grid_shape
        periods = np.asarray(layout.periods, dtype=float)
        if shape is None or len(shape) > 2:
            raise ValueError(
                "peer 'spectral_onsager' needs a uniform 1-D or 2-D grid of DoFs (an interval or "
                "rectangle meshed as a tensor grid, P1); this space is not one"
            )
        if len(periods) != len(shape) or not np.all(periods > 0):
            raise ValueError(
                "peer 'spectral_onsager' needs a mesh periodic in every direction (periods "
                f"{periods.tolist()}): use a Periodic*Mesh"
            )
        if int(width) < 1 or int(substeps) < 1:
            raise ValueError(f"width and substeps must be >= 1, got {width} and {substeps}")
        self.shape = tuple(int(s) for s in shape)
        self.substeps = int(substeps)
        grid = self.shape if len(self.shape) == 2 else (1, self.shape[0])
        ny, nx = grid
        lx = float(periods[0])
        ly = float(periods[1]) if len(self.shape) == 2 else 1.0
        spacing = [lx / nx] + ([ly / ny] if len(self.shape) == 2 else [])
        self._check_spacing(layout, spacing)
        self.grid = grid
        self.points = ny * nx
        self.cell = float(np.prod(spacing))  # h^d
        kx = 2 * np.pi / lx * np.fft.rfftfreq(nx, d=1.0 / nx)
        ky = 2 * np.pi / ly * np.fft.fftfreq(ny, d=1.0 / ny)
        k2 = ky[:, None] ** 2 + kx[None, :] ** 2
        # Columns k_x = 0 and (n_x even) k_x = n_x / 2 hold both members of conjugate pairs.
        paired = np.zeros(nx // 2 + 1, dtype=bool)
        paired[0] = True
        if nx % 2 == 0:
            paired[-1] = True
        # Parseval weights of the half spectrum: the other columns stand for two bins each.
        weight = np.where(paired, 1.0, 2.0)[None, :] * np.ones_like(k2)
        zero_mode = np.ones_like(k2)
        if conserve_mass:
            zero_mode[0, 0] = 0.0
        as_buffer = {"dtype": torch.float64}
        self.register_buffer("k2", torch.tensor(k2, **as_buffer), persistent=False)
        self.register_buffer("weight", torch.tensor(weight, **as_buffer), persistent=False)
        self.register_buffer("paired", torch.tensor(paired), persistent=False)
        self.register_buffer("zero_mode", torch.tensor(zero_mode, **as_buffer), persistent=False)
        self.register_buffer("conjugate_row", torch.tensor((-np.arange(ny)) % ny), persistent=False)
        a0 = b0 = 1.0
        self.raw_a = nn.Parameter(torch.tensor(_inverse_softplus(a0), dtype=torch.float64))
        self.raw_b = nn.Parameter(torch.tensor(_inverse_softplus(b0), dtype=torch.float64))
        mobility = 1.0 / (1.0 + float(dt) * (a0 + b0 * k2))
        self.theta_m = nn.Parameter(torch.tensor(np.sqrt(mobility), dtype=torch.float64))
        self.theta_w = nn.Parameter(torch.zeros(ny, nx // 2 + 1, dtype=torch.float64))
        width = int(width)
        self.density = nn.Sequential(
            nn.Linear(1, width),
            nn.Tanh(),
            nn.Linear(width, width),
            nn.Tanh(),
            nn.Linear(width, 1),
        ).to(torch.float64)

    @staticmethod
    def _check_spacing(layout: NodalLayout, spacing: list[float]) -> None:
        """Refuse a grid whose points do not fill the period evenly (``ValueError``)."""
        for d, h in enumerate(spacing):
            axis = np.unique(np.round(layout.positions[:, d] / (1e-6 * h)))
            first, last = axis.min() * 1e-6 * h, axis.max() * 1e-6 * h
            if not math.isclose(last - first + h, float(layout.periods[d]), rel_tol=1e-6):
                raise ValueError(
                    f"peer 'spectral_onsager': the grid's points do not fill the period "
                    f"{float(layout.periods[d]):g} of direction {d} evenly"
                )

    # ------------------------------------------------------------------ the class's factors
    @property
    def a(self) -> torch.Tensor:
        r"""The coefficient :math:`a > 0` of :math:`\tfrac12 a u^2`."""
        return nn.functional.softplus(self.raw_a)

    @property
    def b(self) -> torch.Tensor:
        r"""The coefficient :math:`b > 0` of :math:`\tfrac12 b |\nabla u|^2`."""
        return nn.functional.softplus(self.raw_b)

    def multipliers(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Return the effective ``(M(k), theta_W(k))`` on the half spectrum, ``(n_y, n_x//2+1)``.

        ``M >= 0`` is even and ``theta_W`` odd under :math:`k \to -k` (symmetrised on the
        self-paired columns), ``M(0) = 0`` with ``conserve_mass``.
        """
        m = self.theta_m**2
        w = self.theta_w
        flipped_m, flipped_w = m[self.conjugate_row], w[self.conjugate_row]
        m = torch.where(self.paired, 0.5 * (m + flipped_m), m) * self.zero_mode
        w = torch.where(self.paired, 0.5 * (w - flipped_w), w)
        return m, w

    def _grid(self, v: torch.Tensor) -> torch.Tensor:
        return v.reshape(v.shape[0], *self.grid)

    def _spectral(self, v: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
        """Apply a half-spectrum multiplier to a ``(batch, n)`` batch of grid values."""
        hat = torch.fft.rfft2(self._grid(v))
        return torch.fft.irfft2(multiplier * hat, s=self.grid).reshape(v.shape[0], -1)

    def apply_m(self, v: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`\mathcal M v`, the dissipative (symmetric, semi-definite) part."""
        return self._spectral(v, self.multipliers()[0])

    def apply_w(self, v: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`\mathcal W v`, the conservative (antisymmetric) part."""
        return self._spectral(v, 1j * self.multipliers()[1])

    def laplacian(self, u: torch.Tensor) -> torch.Tensor:
        """Return the spectral Laplacian of a ``(batch, n)`` batch of states."""
        return self._spectral(u, -self.k2)

    # ------------------------------------------------------------------ energy and dynamics
    def energy(self, u: torch.Tensor) -> torch.Tensor:
        """Return :math:`V(u)` of a ``(batch, n)`` batch of states, shape ``(batch,)``."""
        local = 0.5 * self.a * u**2 + self.density(u.reshape(-1, 1)).reshape(u.shape)
        hat = torch.fft.rfft2(self._grid(u))
        gradient = (self.weight * self.k2 * hat.abs() ** 2).sum(dim=(-2, -1)) / self.points
        return self.cell * (local.sum(dim=1) + 0.5 * self.b * gradient)

    def density_derivative(self, u: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`F_\theta'(u)` pointwise (differentiable while gradients are enabled)."""
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            z = u.reshape(-1, 1)
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            (slope,) = torch.autograd.grad(self.density(z).sum(), z, create_graph=outer)
        return slope.reshape(u.shape)

    def variational_derivative(self, u: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`\delta V/\delta u = a u + F_\theta'(u) - b \Delta u`, ``(batch, n)``.

        This is the gradient of :meth:`energy` divided by the cell volume :math:`h^d`.
        """
        return self.a * u + self.density_derivative(u) - self.b * self.laplacian(u)

    def velocity(self, u: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`\partial_t u = -(\mathcal M + \mathcal W)\,\delta V/\delta u`."""
        m, w = self.multipliers()
        return -self._spectral(self.variational_derivative(u), m + 1j * w)

    def energy_rate(self, u: torch.Tensor) -> torch.Tensor:
        r"""Return the continuous-time :math:`dV/dt = h^d \sum_x \mu\,\partial_t u \le 0`."""
        mu = self.variational_derivative(u)
        m, w = self.multipliers()
        return -self.cell * (mu * self._spectral(mu, m + 1j * w)).sum(dim=1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """One data step (``substeps`` explicit Euler steps) of a ``(batch, n)`` float64 batch."""
        step = self.dt / self.substeps
        for _ in range(self.substeps):
            u = u + step * self.velocity(u)
        return u

    def normalise(self, trajectories: np.ndarray) -> None:
        """Do nothing: the model's physics uses no data scale (the base buffers stay 0 and 1)."""
