r"""The Onsager hypothesis class on a Firedrake function space.

A member of the class is the evolution

.. math:: \partial_t u = -(M(u) + W(u))\,\frac{\delta V}{\delta u}

with an energy :math:`V` (:mod:`femeso.model.energies`), a dissipative mobility :math:`M \ge 0` and
a conservative operator :math:`W = -W^*` (:mod:`femeso.model.mobilities`). In weak mixed form, for
the state :math:`u` and the chemical potential :math:`\mu = \delta V/\delta u`,

.. math::

    (\partial_t u, v) + a_M(u; \mu, v) + a_W(\mu, v) = 0, \qquad
    (\mu, \eta) = (F_u(u, x), \eta) + (\kappa \nabla u, \nabla\eta)
    \quad \forall v, \eta.

:class:`OnsagerModel` holds the parts, evaluates them at the quadrature points of one rule
(:class:`~femeso.model.quadrature.QuadratureRule`), reports the energy by parts, exposes the
semi-discrete weak form as plain UFL (:meth:`OnsagerModel.weak_form`), and saves/loads itself
without pickle. The time discretisation lives in :mod:`femeso.stepping.energy_stable`.

Identifiability gauge
---------------------
:math:`(V, M, W)` and :math:`(cV + d, M/c, W/c)` give the same dynamics, and so does adding to
:math:`F` any function of :math:`x` alone. femeso fixes both freedoms by construction:

* *offset*: every learned density satisfies :math:`F_\theta(0, x) = 0`
  (:class:`~femeso.model.energies.CoerciveNeuralDensity`);
* *scale* (``gauge="kappa"``, the default): when the gradient coefficient is learnable, it is
  normalised so that its mean over the domain and the components equals ``kappa_ref``
  (a fixed, known :math:`\kappa` already fixes the scale).

With both, a dynamics determines :math:`(V, M, W)` uniquely within the class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import firedrake as fd
import torch
import ufl
from torch import nn

from femeso._files import first_line
from femeso.model.energies import (
    BarrierDensity,
    CoerciveNeuralDensity,
    ConstantKappa,
    Energy,
    EntropyDensity,
    NeuralKappa,
    SumDensity,
)
from femeso.model.fields import DTYPE, NeuralField
from femeso.model.files import (
    FORMAT_VERSION,
    ModelFileError,
    _ModelFile,
    _short,
    _strip_values,
    check_architecture_size,
    load_parameters_into,
    write_model_file,
)
from femeso.model.mobilities import (
    CanonicalCoupling,
    ConservedMobility,
    LocalMobility,
    PointwiseMobility,
    SkewTransport,
    TensorMobility,
)
from femeso.model.quadrature import QuadratureRule

__all__ = ["OnsagerModel", "components", "load_model"]


def components(u: Any, n: int) -> list[Any]:
    """Return the ``n`` scalar components of a UFL state (the state itself when ``n == 1``)."""
    return [u] if n == 1 else [u[i] for i in range(n)]


class OnsagerModel(nn.Module):
    r"""A member of the Onsager class on a Firedrake function space.

    Parameters
    ----------
    space
        The state space: a scalar ``FunctionSpace`` (one field) or a ``VectorFunctionSpace`` of
        dimension ``k`` (``k`` fields), continuous Lagrange of any degree, on any mesh.
    energy
        The energy :math:`V`.
    mobility
        Dissipative parts: a :class:`~femeso.model.mobilities.LocalMobility`, a
        :class:`~femeso.model.mobilities.ConservedMobility`, a
        :class:`~femeso.model.mobilities.TensorMobility`, or a sequence of them (they add up).
        Empty for a purely conservative model (:math:`M = 0`).
    conservative
        Conservative parts (:class:`~femeso.model.mobilities.SkewTransport`,
        :class:`~femeso.model.mobilities.CanonicalCoupling`), possibly empty.
    quadrature_degree
        Degree of the rule shared by the energy and the scheme; default ``2 p + 2`` for
        Lagrange degree ``p``.
    gauge
        ``"kappa"`` (default) or ``None``; see the module documentation.
    kappa_ref
        The gauge's mean gradient coefficient.

    """

    def __init__(
        self,
        space: fd.FunctionSpace,
        energy: Energy,
        *,
        mobility: nn.Module | Sequence[nn.Module] = (),
        conservative: nn.Module | Sequence[nn.Module] = (),
        quadrature_degree: int | None = None,
        gauge: str | None = "kappa",
        kappa_ref: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(energy, Energy):
            raise TypeError(f"energy must be a femeso.Energy, got {type(energy).__name__}")
        element = space.ufl_element()
        if element.family() not in ("Lagrange", "Q", "Q"):
            raise ValueError(
                f"the state space must be continuous Lagrange (CG), got {element.family()!r}"
            )
        self.space = space
        self.mesh = space.mesh()
        self.dim = self.mesh.geometric_dimension
        shape = space.value_shape
        if len(shape) > 1:
            raise ValueError(f"the state must be scalar or vector-valued, got shape {shape}")
        self.n_states = 1 if shape == () else shape[0]
        if energy.n_states != self.n_states:
            raise ValueError(
                f"the energy is for {energy.n_states} state components, the space has "
                f"{self.n_states}"
            )
        self.energy = energy
        mobility = [mobility] if isinstance(mobility, nn.Module) else list(mobility)
        conservative = [conservative] if isinstance(conservative, nn.Module) else list(conservative)
        for m in mobility:
            if not isinstance(m, PointwiseMobility | TensorMobility):
                raise TypeError(
                    f"mobility parts must be PointwiseMobility (Local/ConservedMobility or a "
                    f"subclass) or TensorMobility, got {m!r}"
                )
            if isinstance(m, TensorMobility) and m.dim != self.dim:
                raise ValueError(f"TensorMobility has dimension {m.dim}, the mesh {self.dim}")
            if m.n_states != self.n_states:
                raise ValueError(
                    f"{type(m).__name__} has {m.n_states} components, expected {self.n_states}"
                )
        for w in conservative:
            if not isinstance(w, SkewTransport | CanonicalCoupling):
                raise TypeError(
                    f"conservative parts must be SkewTransport/CanonicalCoupling, got {w!r}"
                )
            if isinstance(w, SkewTransport) and w.dim != self.dim:
                raise ValueError(f"SkewTransport has dimension {w.dim}, the mesh {self.dim}")
            if isinstance(w, CanonicalCoupling) and max(w.pair) >= self.n_states:
                raise ValueError(
                    f"CanonicalCoupling pair {w.pair} needs more than "
                    f"{self.n_states} state components"
                )
        self.mobilities = nn.ModuleList(mobility)
        self.conservative = nn.ModuleList(conservative)
        if gauge not in ("kappa", None):
            raise ValueError(f"gauge must be 'kappa' or None, got {gauge!r}")
        if kappa_ref <= 0:
            raise ValueError(f"kappa_ref must be positive, got {kappa_ref}")
        self.gauge, self.kappa_ref = gauge, kappa_ref
        p = element.embedded_superdegree
        self.quadrature_degree = quadrature_degree or 2 * p + 2
        self.rule = QuadratureRule(self.mesh, self.quadrature_degree)
        self._volume = float(self.rule.integrate(torch.ones_like(self.rule.weights)))

    # ------------------------------------------------------------------ properties
    @property
    def is_conservative(self) -> bool:
        """True when :math:`M = 0` (the energy is conserved)."""
        return len(self.mobilities) == 0

    @property
    def conserves_mass(self) -> bool:
        """Whether every dissipative part is a conserved mobility.

        Then the dissipative part conserves ``int u``; conservative parts may still move mass.
        """
        return all(m.conserves_mass for m in self.mobilities)

    @property
    def x(self) -> torch.Tensor:
        """Coordinates of the quadrature points, ``(n, dim)``."""
        return self.rule.points

    # ------------------------------------------------------------------ pointwise values
    def state_at_points(self, u: fd.Function | ufl.core.expr.Expr) -> torch.Tensor:
        """Return the state at the quadrature points, ``(n, k)``."""
        values = self.rule.sample(u)
        return torch.as_tensor(values.reshape(-1, self.n_states).copy(), dtype=DTYPE)

    def density(self, u_q: torch.Tensor) -> torch.Tensor:
        """Return ``F(u, x)`` at the quadrature points for states ``u_q`` ``(n, k)``."""
        return self.energy.density(u_q, self.x)

    def kappa(self) -> torch.Tensor:
        """Return the gradient coefficients at the quadrature points, gauge applied, ``(n, k)``."""
        raw = self.energy.kappa(self.x)
        return raw * self._gauge_factor(raw)

    def kappa_scale(self) -> float:
        """Return the gauge factor applied to the raw gradient coefficients (1 without gauge)."""
        with torch.no_grad():
            return float(self._gauge_factor(self.energy.kappa(self.x)))

    def _gauge_factor(self, raw: torch.Tensor) -> torch.Tensor | float:
        """``kappa_ref / mean(raw kappa)`` for a learnable kappa under the gauge, else 1."""
        if self.gauge == "kappa" and getattr(self.energy.kappa, "learnable", False):
            mean = self.rule.integrate(raw.sum(dim=1)) / (self._volume * self.n_states)
            return self.kappa_ref / mean
        return 1.0

    def tensor_mobility_values(self) -> torch.Tensor | None:
        """Return the summed anisotropic mobility tensors ``(n, dim, dim)``, or ``None``."""
        tensors = [m(self.x) for m in self.mobilities if m.kind == "tensor"]
        return sum(tensors[1:], tensors[0]) if tensors else None

    def mobility_values(self, u_q: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the summed local and conserved mobility coefficients ``(n, k)`` by kind."""
        out: dict[str, torch.Tensor] = {}
        for m in self.mobilities:
            if m.kind == "tensor":
                continue
            values = m.coefficient(u_q, self.x)
            out[m.kind] = out[m.kind] + values if m.kind in out else values
        return out

    # ------------------------------------------------------------------ energy
    def energy_parts(self, u: fd.Function) -> dict[str, float]:
        r"""Return the discrete energy ``V_h(u)`` by parts.

        Returns
        -------
        dict
            ``"pointwise"`` (:math:`V_0 = \int F`), ``"gradient"``
            (:math:`\frac12\int\kappa|\nabla u|^2`), ``"nonlocal"`` (:math:`N(c(u))`, 0 without
            a nonlocal part) and ``"total"``, all evaluated with the model's quadrature rule.

        """
        return self.energy_parts_and_values(u)[0]

    def energy_parts_and_values(
        self, u: fd.Function
    ) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """Return :meth:`energy_parts`, the state ``(n, k)`` and ``F`` ``(n,)`` at the points."""
        with torch.no_grad():
            u_q = self.state_at_points(u)
            F_q = self.density(u_q)
            pointwise = float(self.rule.integrate(F_q))
            kappa = self.kappa()
        grad_u = self.rule.sample(ufl.grad(u)).reshape(-1, self.n_states, self.dim)
        grad_sq = torch.as_tensor((grad_u**2).sum(axis=2), dtype=DTYPE)
        gradient = float(self.rule.integrate(0.5 * (kappa * grad_sq).sum(dim=1)))
        nonlocal_value = 0.0
        if self.energy.nonlocal_part is not None:
            with torch.no_grad():
                nonlocal_value = float(self.energy.nonlocal_part(self.moments(u))[0])
        parts = {
            "pointwise": pointwise,
            "gradient": gradient,
            "nonlocal": nonlocal_value,
            "total": pointwise + gradient + nonlocal_value,
        }
        return parts, u_q, F_q

    def energy_value(self, u: fd.Function) -> float:
        """Return the discrete energy ``V_h(u)``."""
        return self.energy_parts(u)["total"]

    def moments(self, u: fd.Function | ufl.core.expr.Expr) -> torch.Tensor:
        """Return the moments ``c_j = (1/|Omega|) int u phi_j`` of the nonlocal part, ``(1, r)``."""
        X = ufl.SpatialCoordinate(self.mesh)
        values = [
            fd.assemble(u * phi(X) * self.rule.dx) / self._volume
            for phi in self.energy.nonlocal_part.basis
        ]
        return torch.tensor([values], dtype=DTYPE)

    @property
    def volume(self) -> float:
        """The measure of the domain (with the model's quadrature rule)."""
        return self._volume

    def mass(self, u: fd.Function) -> list[float]:
        """Return ``int u_i dx`` for every component."""
        return [fd.assemble(c * self.rule.dx) for c in components(u, self.n_states)]

    # ------------------------------------------------------------------ guarantees
    def coercivity_bounds(self) -> tuple[float, float] | None:
        """Return ``(alpha, C)`` with ``F >= alpha |u|^2 - C`` when the density is learned.

        ``None`` when the density has a known part (its coercivity is the user's).
        """
        return self.energy.density.coercivity_bounds()

    # ------------------------------------------------------------------ plain UFL
    def weak_form(
        self,
        u: Any,
        mu: Any,
        v: Any,
        eta: Any,
        u_t: Any,
        *,
        measure: ufl.Measure | None = None,
    ) -> ufl.Form:
        r"""Return the semi-discrete weak form in plain UFL (networks written out in UFL).

        .. math::
            (u_t, v) + a_M(u; \mu, v) + a_W(\mu, v) + (\mu, \eta)
            - (F_u(u, x), \eta) - (\kappa\nabla u, \nabla\eta)

        Usable in any Firedrake solver, e.g. Irksome with ``u_t = Dt(u)``. Slower than femeso's
        own stepper (the networks become large UFL trees) but the same mathematics.
        """
        if self.energy.nonlocal_part is not None:
            raise NotImplementedError(
                "weak_form: a nonlocal energy part is a functional of u, not a UFL expression "
                "of it; femeso's stepper handles it (low-rank Newton correction)"
            )
        dx = measure or self.rule.dx
        k = self.n_states
        X = ufl.SpatialCoordinate(self.mesh)
        uc, muc = components(u, k), components(mu, k)
        vc, etac = components(v, k), components(eta, k)
        utc = components(u_t, k)
        # F_u via UFL differentiation of the written-out density.
        variables = [ufl.variable(c) for c in uc]
        F = self.energy.density.ufl(variables, X)
        dF = [ufl.diff(F, var) for var in variables]
        kappa = self._kappa_ufl(X)
        form = 0
        for i in range(k):
            form += utc[i] * vc[i] * dx
            form += muc[i] * etac[i] * dx - dF[i] * etac[i] * dx
            form += -kappa[i] * ufl.inner(ufl.grad(uc[i]), ufl.grad(etac[i])) * dx
        for m in self.mobilities:
            form += m.ufl_form(uc, X, muc, vc, dx)
        for w in self.conservative:
            form += w.form(w.ufl_coefficient(X), muc, vc, dx)
        # The written-out density hides the state inside ufl.variable: expand it back.
        return ufl.algorithms.apply_algebra_lowering.apply_algebra_lowering(form)

    def _kappa_ufl(self, X: Any) -> list[Any]:
        scale = self.kappa_scale()
        return [scale * c for c in self.energy.kappa.ufl_values(X)]

    # ------------------------------------------------------------------ saving
    def config(self) -> dict:
        """Return the architecture (everything but the parameter values)."""
        return {
            "format_version": FORMAT_VERSION,
            "n_states": self.n_states,
            "space": {
                "family": self.space.ufl_element().family(),
                "degree": self.space.ufl_element().embedded_superdegree,
            },
            "energy": self.energy.config(),
            "mobilities": [m.config() for m in self.mobilities],
            "conservative": [w.config() for w in self.conservative],
            "quadrature_degree": self.quadrature_degree,
            "gauge": self.gauge,
            "kappa_ref": self.kappa_ref,
        }

    def save(self, path: str | Path, *, comm: Any = None) -> Path:
        """Save architecture (JSON) and parameters (NumPy ``.npz``) -- no pickle, no code.

        Writes ``path`` (a ``.npz`` holding the parameters and the JSON architecture) atomically
        on rank 0 (see :func:`write_model_file`).

        Parameters
        ----------
        path
            The file (``.npz``).
        comm
            The communicator whose rank 0 writes (default: the mesh's); every rank of it calls.

        Raises
        ------
        ValueError
            If a parameter is NaN or infinite (nothing is written).
        OSError
            If the file cannot be written (one line naming it; nothing left under its name).

        """
        return write_model_file(path, self.config(), self, comm)

    def load_parameters(self, path: str | Path) -> None:
        """Load parameter values saved by :meth:`save` into this model (architectures must match).

        The file is checked against this model (architecture, then the names, shapes, dtypes and
        finiteness of the weights) before anything is read into memory or changed.

        Raises
        ------
        FileNotFoundError
            If there is no such file.
        ValueError
            If the file is not a readable model file or does not match this model; one line
            naming the file and what is wrong. The model is left unchanged.

        """
        load_parameters_into(self, path, _strip_values(json.loads(json.dumps(self.config()))))


def _build(config: dict, dim: int) -> nn.Module:
    kind = config.get("type")
    if kind == "NeuralField":
        args = {k: v for k, v in config.items() if k != "type"}
        return NeuralField(**args)
    if kind == "CoerciveNeuralDensity":
        return CoerciveNeuralDensity(**{k: v for k, v in config.items() if k != "type"})
    if kind in ("BarrierDensity", "EntropyDensity"):
        cls = BarrierDensity if kind == "BarrierDensity" else EntropyDensity
        return cls(config["lower"], config["upper"], learnable=config["learnable"])
    if kind == "SumDensity":
        return SumDensity(_build(config["first"], dim), _build(config["second"], dim))
    if kind == "ConstantKappa":
        return ConstantKappa(
            config["value"], n_states=config["n_states"], learnable=config["learnable"]
        )
    if kind == "NeuralKappa":
        return NeuralKappa(**{k: v for k, v in config.items() if k != "type"})
    if kind in ("LocalMobility", "ConservedMobility"):
        coeff = config["coefficient"]
        c = coeff["value"] if coeff.get("type") == "constant" else _build(coeff, dim)
        cls = LocalMobility if kind == "LocalMobility" else ConservedMobility
        return cls(c, n_states=config["n_states"], vanishing_range=config.get("vanishing_range"))
    if kind == "TensorMobility":
        t = config["tensor"]
        return TensorMobility(
            _build(t, dim) if isinstance(t, dict) else t,
            dim=config["dim"],
            n_states=config["n_states"],
        )
    if kind == "SkewTransport":
        v = config["velocity"]
        return SkewTransport(_build(v, dim) if isinstance(v, dict) else v, dim=config["dim"])
    if kind == "CanonicalCoupling":
        c = config["coefficient"]
        return CanonicalCoupling(
            _build(c, dim) if isinstance(c, dict) else c, pair=tuple(config["pair"])
        )
    raise ValueError(
        f"cannot rebuild a {kind!r} from a file (closed-form parts are code): build the model in "
        "your script and call model.load_parameters(path)"
    )


def load_model(path: str | Path, space: fd.FunctionSpace) -> OnsagerModel:
    """Rebuild a model saved by :meth:`OnsagerModel.save` on the given state space.

    Models with closed-form (:class:`~femeso.model.energies.KnownDensity`, ``Expression``) parts are
    rebuilt by the user's code followed by :meth:`OnsagerModel.load_parameters`.

    The file is checked before anything is built: a readable archive, a JSON architecture of
    this format whose sizes are within :data:`ARCHITECTURE_LIMITS` and do not exceed the stored
    weights (:func:`check_architecture_size`); then the weights against the rebuilt model.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        One line naming the file and what is wrong with it.

    """
    file = _ModelFile(path)
    path, config = file.path, file.config
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            path, f"unsupported model format {_short(config.get('format_version'))}"
        )
    if not isinstance(config.get("energy"), dict):
        raise ModelFileError(
            path, "not a femeso Onsager model file (no energy in the architecture)"
        )
    if "nonlocal" in config["energy"]:
        raise ModelFileError(
            path,
            "the model has a nonlocal energy part whose basis functions are code: build the model "
            "in your script and call model.load_parameters(path)",
        )
    check_architecture_size(path, config, file.n_values)
    dim = space.mesh().geometric_dimension
    try:
        energy = Energy(
            _build(config["energy"]["density"], dim), _build(config["energy"]["kappa"], dim)
        )
        model = OnsagerModel(
            space,
            energy,
            mobility=[_build(c, dim) for c in config["mobilities"]],
            conservative=[_build(c, dim) for c in config["conservative"]],
            quadrature_degree=config["quadrature_degree"],
            gauge=config["gauge"],
            kappa_ref=config["kappa_ref"],
        )
    except KeyError as exc:
        raise ModelFileError(path, f"invalid architecture: no entry {exc.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError, IndexError, RuntimeError, OverflowError) as exc:
        raise ModelFileError(path, f"invalid architecture: {first_line(exc)}") from None
    model.load_parameters(path)
    return model
