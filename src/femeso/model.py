r"""The Onsager hypothesis class on a Firedrake function space.

A member of the class is the evolution

.. math:: \partial_t u = -(M(u) + W(u))\,\frac{\delta V}{\delta u}

with an energy :math:`V` (:mod:`femeso.energies`), a dissipative mobility :math:`M \ge 0` and a
conservative operator :math:`W = -W^*` (:mod:`femeso.mobilities`). In weak mixed form, for the
state :math:`u` and the chemical potential :math:`\mu = \delta V/\delta u`,

.. math::

    (\partial_t u, v) + a_M(u; \mu, v) + a_W(\mu, v) = 0, \qquad
    (\mu, \eta) = (F_u(u, x), \eta) + (\kappa \nabla u, \nabla\eta)
    \quad \forall v, \eta.

:class:`OnsagerModel` holds the parts, evaluates them at the quadrature points of one rule
(:class:`~femeso.quadrature.QuadratureRule`), reports the energy by parts, exposes the
semi-discrete weak form as plain UFL (:meth:`OnsagerModel.weak_form`), and saves/loads itself
without pickle. The time discretisation lives in :mod:`femeso.steppers`.

Identifiability gauge
---------------------
:math:`(V, M, W)` and :math:`(cV + d, M/c, W/c)` give the same dynamics, and so does adding to
:math:`F` any function of :math:`x` alone. femeso fixes both freedoms by construction:

* *offset*: every learned density satisfies :math:`F_\theta(0, x) = 0`
  (:class:`~femeso.energies.CoerciveNeuralDensity`);
* *scale* (``gauge="kappa"``, the default): when the gradient coefficient is learnable, it is
  normalised so that its mean over the domain and the components equals ``kappa_ref``
  (a fixed, known :math:`\kappa` already fixes the scale).

With both, a dynamics determines :math:`(V, M, W)` uniquely within the class.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import firedrake as fd
import numpy as np
import torch
import ufl
from torch import nn

from femeso._files import atomic_write, first_line, on_rank_zero
from femeso.energies import (
    BarrierDensity,
    CoerciveNeuralDensity,
    ConstantKappa,
    Energy,
    NeuralKappa,
    SumDensity,
)
from femeso.fields import DTYPE, NeuralField
from femeso.mobilities import (
    CanonicalCoupling,
    ConservedMobility,
    LocalMobility,
    PointwiseMobility,
    SkewTransport,
    TensorMobility,
)
from femeso.quadrature import QuadratureRule

__all__ = [
    "ModelFileError",
    "OnsagerModel",
    "components",
    "load_model",
    "load_parameters_into",
    "read_model_file",
    "write_model_file",
]

FORMAT_VERSION = 1


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
        Dissipative parts: a :class:`~femeso.mobilities.LocalMobility`, a
        :class:`~femeso.mobilities.ConservedMobility`, a
        :class:`~femeso.mobilities.TensorMobility`, or a sequence of them (they add up).
        Empty for a purely conservative model (:math:`M = 0`).
    conservative
        Conservative parts (:class:`~femeso.mobilities.SkewTransport`,
        :class:`~femeso.mobilities.CanonicalCoupling`), possibly empty.
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
        density = self.energy.density
        if isinstance(density, CoerciveNeuralDensity):
            return density.coercivity_bounds()
        return None

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
        kappa = self.energy.kappa
        scale = self.kappa_scale()
        if isinstance(kappa, NeuralKappa):
            raw = kappa.network.ufl(None, X)
            from femeso.fields import UFL_OPS

            return [scale * UFL_OPS.softplus(r) for r in raw]
        with torch.no_grad():
            values = kappa(torch.zeros(1, 1, dtype=DTYPE))[0]
        return [scale * float(c) for c in values]

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

    def save(self, path: str | Path) -> Path:
        """Save architecture (JSON) and parameters (NumPy ``.npz``) -- no pickle, no code.

        Writes ``path`` (a ``.npz`` holding the parameters and the JSON architecture) atomically
        on rank 0 (see :func:`write_model_file`).

        Raises
        ------
        ValueError
            If a parameter is NaN or infinite (nothing is written).
        OSError
            If the file cannot be written (one line naming it; nothing left under its name).

        """
        return write_model_file(path, self.config(), self, self.mesh.comm)

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


# ---------------------------------------------------------------------- the model file format
#: The largest architecture JSON a model file may hold (real ones are a few kilobytes).
MAX_CONFIG_BYTES = 1 << 20
#: Bounds on the integer sizes of an architecture read from a file, checked before anything is
#: built: a tampered ``width`` of 10**9 would otherwise allocate petabytes.
ARCHITECTURE_LIMITS = {
    "width": 1 << 16,
    "depth": 256,
    "n_states": 64,
    "n_outputs": 1 << 12,
    "n_moments": 1 << 12,
    "dim": 3,
    "polynomial_degree": 256,
    "quadrature_degree": 64,
}
#: The most parameters a model rebuilt from a file may have (1 GiB of float64).
MAX_PARAMETERS = 1 << 27
_PARAM = "param:"


class ModelFileError(ValueError):
    """A model file that cannot be read or does not match: one line naming the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a model's architecture")


def _model_file_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_suffix(".npz")


def write_model_file(path: str | Path, config: dict, module: nn.Module, comm: Any) -> Path:
    """Write a model file: ``module``'s state (NumPy) and its ``config`` (JSON), on rank 0.

    The file is a ``.npz`` (the suffix is added when missing), written to a temporary file beside
    it and renamed (:func:`femeso._files.atomic_write`); no pickle.

    Parameters
    ----------
    path
        The file.
    config
        The architecture (JSON-serialisable, finite numbers only).
    module
        The model whose ``state_dict`` is saved.
    comm
        The model's communicator (rank 0 writes; every rank returns or raises alike).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        If a parameter or the architecture holds NaN or infinity; nothing is written.
    OSError
        If the file cannot be written (disk full, file-size limit ...): one line naming it, the
        temporary removed and an existing file of that name unchanged.

    """
    path = _model_file_path(path)

    def write() -> None:
        arrays = {}
        for name, value in module.state_dict().items():
            array = value.detach().cpu().numpy()
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise ValueError(
                    f"{path}: refusing to save a model whose parameter {name!r} has {bad} NaN or "
                    "infinite value(s)"
                )
            arrays[_PARAM + name] = array
        try:
            text = json.dumps(config, allow_nan=False)
        except ValueError as exc:
            raise ValueError(f"{path}: refusing to save a non-finite architecture value") from exc
        arrays["config"] = np.array(text)
        with atomic_write(path, "the model file") as f:
            np.savez(f, **arrays)

    on_rank_zero(comm, write)
    return path


class _ModelFile:
    """A model file opened and checked without loading its weights.

    Checked: a readable ``.npz`` archive of NumPy arrays only (no pickle), an architecture that
    is a JSON object of finite values, and for every weight a header consistent with its stored
    size. ``arrays`` maps each weight's name to its ``(shape, dtype)``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: model file not found")
        if not path.is_file():
            raise ModelFileError(path, "not a femeso model file (not a regular file)")
        self.arrays: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        with self._archive() as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise ModelFileError(path, "corrupt model file (an array is stored twice)")
            if "config.npy" not in names:
                raise ModelFileError(path, "not a femeso model file (no architecture)")
            for info in infos:
                name = info.filename
                if name != "config.npy" and not (name.startswith(_PARAM) and name.endswith(".npy")):
                    raise ModelFileError(
                        path, f"not a femeso model file (unexpected entry {name!r})"
                    )
            self.config = self._read_config(archive, archive.getinfo("config.npy"))
            for info in infos:
                if info.filename != "config.npy":
                    with self._member(archive, info) as f:
                        key = info.filename[len(_PARAM) : -len(".npy")]
                        self.arrays[key] = self._header(f, info, key)

    # -- reading, with every failure of the archive or NumPy turned into one line
    def _archive(self) -> Any:
        return _guarded(self.path, lambda: zipfile.ZipFile(self.path))

    def _member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
        return _guarded(self.path, lambda: archive.open(info))

    def _header(self, f: Any, info: zipfile.ZipInfo, key: str) -> tuple[tuple[int, ...], np.dtype]:
        def read() -> tuple[tuple[int, ...], np.dtype, int]:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ModelFileError(self.path, f"array {key!r} has unsupported format {version}")
            return shape, dtype, f.tell()

        shape, dtype, start = _guarded(self.path, read)
        if dtype.hasobject or dtype.kind not in "biuf":
            raise ModelFileError(self.path, f"array {key!r} holds {dtype}, not numbers")
        if math.prod(shape) * dtype.itemsize != info.file_size - start:
            raise ModelFileError(
                self.path, f"corrupt model file (array {key!r}: its size does not match its shape)"
            )
        return tuple(shape), dtype

    def _read_config(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict:
        if info.file_size > MAX_CONFIG_BYTES:
            raise ModelFileError(
                self.path,
                f"the architecture takes {info.file_size} bytes (at most {MAX_CONFIG_BYTES})",
            )
        with self._member(archive, info) as f:
            value = _guarded(self.path, lambda: np.lib.format.read_array(f, allow_pickle=False))
        if value.shape != () or value.dtype.kind != "U":
            raise ModelFileError(self.path, "corrupt model file (the architecture is not text)")
        try:
            config = json.loads(str(value[()]), parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise ModelFileError(
                self.path, f"the architecture is not valid JSON ({first_line(exc)})"
            ) from None
        if not isinstance(config, dict):
            raise ModelFileError(self.path, "the architecture is not a JSON object")
        return config

    # -- the weights
    @property
    def n_values(self) -> int:
        """The number of stored weight values."""
        return sum(math.prod(shape) for shape, _ in self.arrays.values())

    def check_against(self, expected: Mapping[str, torch.Tensor]) -> None:
        """Refuse weights whose names, shapes or dtypes differ from ``expected`` (a state dict)."""
        missing = [k for k in expected if k not in self.arrays]
        if missing:
            raise ModelFileError(self.path, f"weights missing from the file: {_names(missing)}")
        extra = [k for k in self.arrays if k not in expected]
        if extra:
            raise ModelFileError(self.path, f"weights this model does not have: {_names(extra)}")
        for key, tensor in expected.items():
            shape, dtype = self.arrays[key]
            want = tensor.detach().cpu().numpy().dtype
            if shape != tuple(tensor.shape):
                raise ModelFileError(
                    self.path,
                    f"weight {key!r} has shape {shape} in the file, {tuple(tensor.shape)} in "
                    "this model",
                )
            if dtype != want:
                raise ModelFileError(
                    self.path, f"weight {key!r} is {dtype} in the file, {want} in this model"
                )

    def read_weights(self) -> dict[str, torch.Tensor]:
        """Read every weight (call :meth:`check_against` first); refuse NaN and infinity."""
        state = {}
        with self._archive() as archive:
            for key in self.arrays:
                with self._member(archive, archive.getinfo(f"{_PARAM}{key}.npy")) as f:
                    array = _guarded(
                        self.path, lambda f=f: np.lib.format.read_array(f, allow_pickle=False)
                    )
                bad = int(array.size - np.count_nonzero(np.isfinite(array)))
                if bad:
                    raise ModelFileError(
                        self.path, f"weight {key!r} has {bad} NaN or infinite value(s)"
                    )
                state[key] = torch.from_numpy(np.array(array, copy=True))
        return state


def _guarded(path: Path, read: Callable[[], Any]) -> Any:
    """Call ``read``; turn what a damaged archive raises into a one-line :class:`ModelFileError`."""
    try:
        return read()
    except ModelFileError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise ModelFileError(
            path, f"not a readable model file (truncated or corrupt: {first_line(exc)})"
        ) from None


def _names(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _difference(saved: Any, mine: Any, where: str = "") -> str | None:
    """Describe the first difference between two architectures (``None`` when equal)."""
    if isinstance(saved, dict) and isinstance(mine, dict):
        for key in sorted(set(saved) | set(mine)):
            at = f"{where}.{key}" if where else key
            if key not in saved:
                return f"{at} is missing from the file"
            if key not in mine:
                return f"{at} is in the file but not in this model"
            found = _difference(saved[key], mine[key], at)
            if found:
                return found
        return None
    if isinstance(saved, list) and isinstance(mine, list) and len(saved) == len(mine):
        for i, (a, b) in enumerate(zip(saved, mine, strict=True)):
            found = _difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    if saved == mine and isinstance(saved, bool) == isinstance(mine, bool):
        return None
    where = where or "the architecture"
    return f"{where} is {_short(saved)} in the file, {_short(mine)} in this model"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_architecture_size(path: str | Path, config: dict, n_values: int) -> None:
    """Refuse an architecture whose sizes are out of bounds or exceed the stored weights.

    Called on an architecture read from a file before anything is built from it: every integer
    size in :data:`ARCHITECTURE_LIMITS` must lie in its bounds, and the parameters that the
    networks need at the least must not outnumber the ``n_values`` weights the file holds.

    Raises
    ------
    ValueError
        One line naming the file and the offending entry.

    """
    needed = 0

    def walk(node: Any, where: str) -> None:
        nonlocal needed
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            at = f"{where}.{key}" if where else str(key)
            if key in ARCHITECTURE_LIMITS and value is not None:
                top = ARCHITECTURE_LIMITS[key]
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                    raise ModelFileError(
                        path,
                        f"implausible architecture: {at} = {_short(value)} (an integer from 0 to "
                        f"{top} expected)",
                    )
            walk(value, at)
        width, depth = node.get("width"), node.get("depth")
        if isinstance(width, int) and isinstance(depth, int) and width > 0 and depth > 0:
            # a network of >= 1 input and output: 3 w + 1 + (depth - 1) (w^2 + w) parameters
            needed += 3 * width + 1 + (depth - 1) * (width * width + width)
        degree = node.get("polynomial_degree")
        if isinstance(degree, int) and degree > 0:
            needed += degree
        if needed > MAX_PARAMETERS:
            raise ModelFileError(
                path, f"implausible architecture: more than {MAX_PARAMETERS} parameters ({where})"
            )

    walk(config, "")
    if needed > n_values:
        raise ModelFileError(
            path,
            f"the architecture needs at least {needed} weight values but the file holds "
            f"{n_values} (weights missing, or a tampered architecture)",
        )


def read_model_file(
    path: str | Path, expected: Mapping[str, torch.Tensor] | None = None
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Return the architecture and the state saved by :func:`write_model_file`.

    Parameters
    ----------
    path
        The model file.
    expected
        A ``state_dict`` the weights must match (names, shapes, dtypes), checked before any
        weight is read.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        One line naming the file and what is wrong: not a readable ``.npz`` model file (truncated,
        corrupt, pickled data), an architecture that is not a JSON object, weights that do not
        match ``expected`` or that hold NaN or infinity.

    """
    file = _ModelFile(path)
    if expected is not None:
        file.check_against(expected)
    return file.config, file.read_weights()


def load_parameters_into(module: nn.Module, path: str | Path, config: dict) -> None:
    """Load a model file into ``module``, whose architecture is ``config``; all checks first.

    The saved architecture must equal ``config`` (both through :func:`_strip_values`), the
    weights must match ``module.state_dict()`` and be finite; only then is ``module`` changed.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`read_model_file`; ``ValueError`` also names the first architecture entry
        that differs.

    """
    file = _ModelFile(path)
    difference = _difference(_strip_values(file.config), config)
    if difference:
        raise ModelFileError(
            file.path, f"saved model architecture differs from this model's: {difference}"
        )
    file.check_against(module.state_dict())
    module.load_state_dict(file.read_weights())


def _strip_values(config: Any) -> Any:
    """Drop entries that are parameter values rather than architecture (constant kappa values)."""
    if isinstance(config, dict):
        return {
            k: _strip_values(v)
            for k, v in config.items()
            if not (
                config.get("type") == "ConstantKappa" and k == "value" and config.get("learnable")
            )
        }
    if isinstance(config, list):
        return [_strip_values(v) for v in config]
    return config


def _build(config: dict, dim: int) -> nn.Module:
    kind = config.get("type")
    if kind == "NeuralField":
        args = {k: v for k, v in config.items() if k != "type"}
        return NeuralField(**args)
    if kind == "CoerciveNeuralDensity":
        return CoerciveNeuralDensity(**{k: v for k, v in config.items() if k != "type"})
    if kind == "BarrierDensity":
        return BarrierDensity(config["lower"], config["upper"], learnable=config["learnable"])
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
        return cls(c, n_states=config["n_states"])
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

    Models with closed-form (:class:`~femeso.energies.KnownDensity`, ``Expression``) parts are
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
