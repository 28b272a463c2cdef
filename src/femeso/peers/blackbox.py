r"""The black-box baseline: an unconstrained neural right-hand side, same inputs, same stepper.

femeso's structured models are compared with a model that sees the same inputs (the state at the
quadrature points, its gradient, optionally the position), has about as many parameters, and is
advanced by the same implicit-midpoint family with exact Newton Jacobians -- but has *no* Onsager
structure: no energy, no sign constraints. In weak mixed form, with an auxiliary field :math:`z`
(so that both second-order, Allen--Cahn-like, and fourth-order, Cahn--Hilliard-like, dynamics
are representable) one step from :math:`u^0` to :math:`(u^1, z)` solves, for all
:math:`(v, \eta)` in ``V x V``,

.. math::

    (u^1 - u^0, v) + \Delta t\,\big[(a(u^*)\nabla z, \nabla v) + (r(u^*), v)
        + (c(u^*)\, z, v)\big] &= 0, \\
    (z, \eta) - (g(u^*), \eta) - (b\,\nabla u^*, \nabla\eta) &= 0,

with :math:`u^* = (u^0 + u^1)/2` the midpoint, :math:`a, r, c, g` unconstrained pointwise neural
fields of :math:`u` (and of :math:`x` with ``position=True``) and :math:`b` a free real number
(any sign). With :math:`a = 0, c = 1` this is :math:`u_t = -r(u) - g(u) + b\Delta u`; with
:math:`c = 0` it is :math:`u_t = \nabla\cdot(a\nabla(g(u) - b\Delta u)) - r(u)`.

:class:`BlackBoxStepper` mirrors the public interface of
:class:`~femeso.stepping.energy_stable.EnergyStableStepper` (``advance``, ``rollout``, ``reset``,
records, halvings on failure) and implements the one-step adjoint protocol used by the trainer:
:meth:`BlackBoxStepper.restore` puts the stepper back into the converged state of a step, and
:meth:`BlackBoxStepper.vjp` accumulates :math:`dL/d\theta` into the parameters' ``.grad`` and
returns :math:`dL/du^0`, so that steps chain.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import firedrake as fd
import numpy as np
import torch
import ufl
from mpi4py import MPI
from torch import nn

from femeso.model.fields import DTYPE, NeuralField
from femeso.model.files import load_parameters_into, write_model_file
from femeso.model.quadrature import QuadratureRule
from femeso.stepping.control import take_step
from femeso.stepping.energy_stable import (
    DIRECT_SOLVER,
    SteppingLoop,
    StepRecord,
    on_all_ranks,
)
from femeso.stepping.solvers import LU, lu_solver

__all__ = ["BlackBoxModel", "BlackBoxStepper"]

FORMAT_VERSION = 1

#: The pointwise fields of the black-box model, in the order of the network's outputs.
FIELDS = ("a", "r", "c", "g")


class BlackBoxModel(nn.Module):
    r"""An unconstrained neural right-hand side on a scalar CG space (no Onsager structure).

    The four pointwise fields :math:`a, r, c, g` (see :mod:`femeso.peers.blackbox`) are the four
    outputs of one :class:`~femeso.model.fields.NeuralField` of :math:`u` (and :math:`x`), with no
    output bound, softplus or sign constraint used; :math:`b` is a free real parameter. One
    shared hidden layer of width ``w`` has ``6 w + 4`` weights (``+1`` for :math:`b`), as many
    as an :class:`~femeso.model.OnsagerModel` with a density network and a mobility network
    of the same width (``2 (3 w + 1)``, plus the density's two coefficients).

    Parameters
    ----------
    space
        The state space: a scalar continuous Lagrange (CG) ``FunctionSpace`` of any degree.
    width, depth
        Hidden layer width and number of hidden layers of the network.
    seed
        Seed of the network's random initialisation.
    quadrature_degree
        Degree of the quadrature rule (default ``2 p + 2`` for Lagrange degree ``p``, as for
        :class:`~femeso.model.OnsagerModel`).
    position
        Let the fields depend on the position ``x`` too.
    init_scale
        Scale of the network's random output layer at initialisation (see
        :class:`~femeso.model.fields.NeuralField`).
    a_init
        Offset added to the initial output bias of :math:`a`. With the defaults the untrained
        model is close to :math:`u_t = \nabla\cdot(a\nabla(g(u) - b\Delta u)) - c z - r(u)` with
        :math:`a \approx 1 > 0`, :math:`b > 0`: a well-posed fourth-order equation, so Newton
        converges from the start; nothing keeps the signs during training.
    b_init
        Initial value of the gradient coefficient :math:`b` (any sign).

    Raises
    ------
    ValueError
        If the space is not a scalar CG space, or the sizes are invalid.

    """

    n_states = 1

    def __init__(
        self,
        space: fd.FunctionSpace,
        *,
        width: int = 16,
        depth: int = 1,
        seed: int = 0,
        quadrature_degree: int | None = None,
        position: bool = False,
        init_scale: float = 0.5,
        a_init: float = 1.0,
        b_init: float = 1e-2,
    ) -> None:
        super().__init__()
        if not isinstance(space, fd.functionspaceimpl.WithGeometry):
            raise TypeError(f"space must be a Firedrake FunctionSpace, got {type(space).__name__}")
        element = space.ufl_element()
        family = element.family()
        if family not in ("Lagrange", "Q") or space.value_shape != ():
            raise ValueError(
                "BlackBoxModel needs a scalar continuous Lagrange (CG) space, got "
                f"family {family!r} with value shape {space.value_shape}"
            )
        if not all(math.isfinite(v) for v in (init_scale, a_init, b_init)) or init_scale < 0:
            raise ValueError(
                "init_scale >= 0, a_init and b_init must be finite numbers, got "
                f"{init_scale}, {a_init}, {b_init}"
            )
        self.space = space
        self.mesh = space.mesh()
        self.dim = self.mesh.geometric_dimension
        self.position = bool(position)
        self.network = NeuralField(
            1,
            len(FIELDS),
            width=width,
            depth=depth,
            dim=self.dim if self.position else None,
            seed=seed,
            init_scale=init_scale,
        )
        with torch.no_grad():  # an initial offset only: a stays a free parameter of any sign
            self.network.layers[-1].bias[FIELDS.index("a")] += a_init
        self.b = nn.Parameter(torch.tensor(float(b_init), dtype=DTYPE))
        p = element.embedded_superdegree
        self.quadrature_degree = quadrature_degree or 2 * p + 2
        self.rule = QuadratureRule(self.mesh, self.quadrature_degree)

    @property
    def x(self) -> torch.Tensor:
        """Coordinates of the quadrature points, ``(n, dim)``."""
        return self.rule.points

    def values(self, u_q: torch.Tensor) -> torch.Tensor:
        """Return ``(a, r, c, g)`` at the points for states ``u_q`` ``(n, 1)``, ``(n, 4)``."""
        return self.network(u_q, self.x if self.position else None)

    def values_and_derivatives(self, u_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the fields and their derivatives in ``u`` at the points, each ``(n, 4)``."""
        y, dy, _ = self.network.forward_with_state_derivatives(
            u_q, self.x if self.position else None, second=False
        )
        return y, dy

    def state_at_points(self, u: fd.Function | ufl.core.expr.Expr) -> torch.Tensor:
        """Return the state at the quadrature points, ``(n, 1)``."""
        return torch.as_tensor(self.rule.sample(u).reshape(-1, 1).copy(), dtype=DTYPE)

    def mass(self, u: fd.Function) -> list[float]:
        """Return ``[int u dx]`` (with the model's quadrature rule)."""
        return [fd.assemble(u * self.rule.dx)]

    def config(self) -> dict:
        """Return the architecture (everything but the parameter values)."""
        return {
            "type": "BlackBoxModel",
            "format_version": FORMAT_VERSION,
            "width": self.network.width,
            "depth": self.network.depth,
            "quadrature_degree": self.quadrature_degree,
            "position": self.position,
        }

    def save(self, path: str | Path, *, comm: Any = None) -> Path:
        """Save architecture (JSON) and parameters (NumPy ``.npz``) on rank 0 -- no pickle.

        The same file format as :meth:`femeso.model.OnsagerModel.save`, written atomically.

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
        """Load parameter values saved by :meth:`save` (the architectures must match).

        Everything is checked (architecture, names, shapes, dtypes and finiteness of the weights)
        before the model is changed.

        Raises
        ------
        FileNotFoundError
            If there is no such file.
        ValueError
            If the file is not a readable model file or its architecture or weights differ from
            this model's; one line naming the file and what is wrong.

        """
        load_parameters_into(self, path, json.loads(json.dumps(self.config())))


class BlackBoxStepper(SteppingLoop):
    r"""Implicit-midpoint stepper for a :class:`BlackBoxModel`, with the one-step adjoint.

    Newton (PETSc SNES, :data:`~femeso.stepping.energy_stable.DIRECT_SOLVER` by default) on the
    mixed unknown ``w = (u^1, z)`` in ``W = V x V`` with the exact Jacobian: the fields and their
    ``u``-derivatives are evaluated in PyTorch at the quadrature points of the current iterate
    (once per iterate) before every residual and Jacobian evaluation. A failed Newton solve or a
    non-finite solution rejects the sub-step and retries with half the step (growing again after
    a success). The public interface mirrors
    :class:`~femeso.stepping.energy_stable.EnergyStableStepper`; the records carry ``nan`` in the
    energy fields (the baseline has no energy).

    Parameters
    ----------
    model
        The model.
    u0
        Initial state (a ``Function`` on ``model.space``; copied).
    dt
        Step size (> 0).
    t0
        Initial time.
    solver_parameters
        PETSc options, merged over :data:`~femeso.stepping.energy_stable.DIRECT_SOLVER`.
    max_halvings
        How often in a row a failed (sub-)step is retried with half the step before
        :class:`~femeso.stepping.energy_stable.StepFailure` is raised.
    options_prefix
        PETSc options prefix of the nonlinear solver.

    """

    def __init__(
        self,
        model: BlackBoxModel,
        u0: fd.Function,
        dt: float,
        *,
        t0: float = 0.0,
        solver_parameters: dict[str, Any] | None = None,
        max_halvings: int = 8,
        options_prefix: str | None = None,
    ) -> None:
        if not isinstance(model, BlackBoxModel):
            raise TypeError(f"model must be a BlackBoxModel, got {type(model).__name__}")
        self.dt = _positive_step(dt)
        if u0.function_space() != model.space:
            raise ValueError("u0 must live on the model's state space")
        if max_halvings < 0:
            raise ValueError(f"max_halvings must be >= 0, got {max_halvings}")
        self.model = model
        self.t = float(t0)
        self.max_halvings = int(max_halvings)
        V, rule = model.space, model.rule
        self.W = V * V
        self.u = fd.Function(V, name="u").assign(u0)  # the current state
        # The start of the step being solved (or restored): kept apart from ``u`` so that the
        # residual still describes the last step after ``advance`` has moved ``u`` on.
        self._u0 = fd.Function(V, name="u_start").assign(u0)
        self.w = fd.Function(self.W, name="u_z")
        self.w.subfunctions[0].assign(u0)
        self._dt = fd.Constant(self.dt)
        self._b = fd.Constant(float(model.b.detach()))

        # ---- values at the quadrature points, refreshed from PyTorch
        self._u1_q = rule.function()
        self._u0_q = rule.function()
        self.values_q = {name: rule.function(name=name) for name in FIELDS}
        self.derivatives_q = {name: rule.function(name=f"d{name}") for name in FIELDS}
        self.lin = rule.function(name="u1_points")
        self._h_q = rule.function(name="u0_sensitivity")

        # ---- the forms
        self.residual = self._form(linearised=False)
        self.jacobian = fd.derivative(self._form(linearised=True), self.w)
        self.bcs: list[fd.DirichletBC] = []
        params = {**DIRECT_SOLVER, **(solver_parameters or {})}
        self.solver_parameters = params
        problem = fd.NonlinearVariationalProblem(self.residual, self.w, J=self.jacobian)
        self.solver = fd.NonlinearVariationalSolver(
            problem,
            solver_parameters=params,
            options_prefix=options_prefix,
            pre_function_callback=self._update_pointwise,
            pre_jacobian_callback=self._update_pointwise,
        )
        self._z_solver = self._initial_z_solver()
        self._last_u1: np.ndarray | None = None
        self._consistent = False  # whether (u0, w, dt) is the converged system of one whole step
        self._adjoint: dict[str, Any] | None = None
        self.records: list[StepRecord] = []
        self._prepare_step()
        self._initial_z()

    # ------------------------------------------------------------------ forms
    def _form(self, *, linearised: bool) -> ufl.Form:
        """Return the residual; with ``linearised`` the pointwise values carry their derivatives.

        The linearised form equals the residual at the current iterate (the values are sampled
        there) and its UFL derivative in ``w`` is the exact Jacobian of the residual.
        """
        dx = self.model.rule.dx
        u1, z = fd.split(self.w)
        v, eta = fd.TestFunctions(self.W)
        u0 = self._u0
        increment = u1 - self.lin

        def field(name: str) -> Any:
            value = self.values_q[name]
            return value + self.derivatives_q[name] * increment if linearised else value

        u_mid = 0.5 * (u0 + u1)
        return (
            (u1 - u0) * v * dx
            + self._dt
            * (
                field("a") * ufl.inner(ufl.grad(z), ufl.grad(v))
                + field("r") * v
                + field("c") * z * v
            )
            * dx
            + z * eta * dx
            - field("g") * eta * dx
            - self._b * ufl.inner(ufl.grad(u_mid), ufl.grad(eta)) * dx
        )

    def _initial_z_solver(self) -> fd.LinearVariationalSolver:
        r"""Solver of :math:`(z, \eta) = (g(u^0), \eta) + (b\nabla u^0, \nabla\eta)`."""
        V, dx = self.model.space, self.model.rule.dx
        self._g0_q = self.model.rule.function(name="g0")
        self._z0 = fd.Function(V, name="z0")
        z, eta = fd.TrialFunction(V), fd.TestFunction(V)
        rhs = self._g0_q * eta * dx + self._b * ufl.inner(ufl.grad(self._u0), ufl.grad(eta)) * dx
        problem = fd.LinearVariationalProblem(z * eta * dx, rhs, self._z0, constant_jacobian=True)
        return fd.LinearVariationalSolver(
            problem,
            solver_parameters=LU,
        )

    # ------------------------------------------------------------------ pointwise values
    def _prepare_step(self) -> None:
        """Evaluate what stays fixed during a step: ``u^0`` at the points and ``b``."""
        self.model.rule.sample(self._u0, out=self._u0_q)
        self._u0_t = torch.as_tensor(self._u0_q.dat.data_ro.reshape(-1, 1).copy(), dtype=DTYPE)
        self._b.assign(float(self.model.b.detach()))
        self._last_u1 = None

    def _update_pointwise(self, X) -> None:
        """SNES callback: copy the iterate into ``w`` and refresh the pointwise values."""
        with self.w.dat.vec_wo as w_vec:
            X.copy(w_vec)
        self._update_values()

    def _update_values(self) -> None:
        """Refresh the fields and their derivatives at the iterate ``w`` (once per iterate)."""
        self.model.rule.sample(self.w.subfunctions[0], out=self._u1_q)
        u1 = self._u1_q.dat.data_ro.reshape(-1, 1)
        unchanged = self._last_u1 is not None and np.array_equal(u1, self._last_u1)
        if on_all_ranks(self.model.mesh.comm, unchanged):  # writing dirties halos: decide jointly
            return
        self._last_u1 = u1.copy()
        rule = self.model.rule
        u1_t = torch.as_tensor(self._last_u1, dtype=DTYPE)
        with torch.no_grad():
            y, dy = self.model.values_and_derivatives(0.5 * (self._u0_t + u1_t))
        for j, name in enumerate(FIELDS):
            rule.assign(self.values_q[name], y[:, j])
            # d f(u*) / d u1 = f'(u*) / 2 at the midpoint
            rule.assign(self.derivatives_q[name], 0.5 * dy[:, j])
        rule.assign(self.lin, u1_t[:, 0])

    def _initial_z(self) -> None:
        """Set Newton's initial guess of ``z``: the L2 projection of its equation at ``u^0``."""
        with torch.no_grad():
            g0 = self.model.values(self._u0_t)[:, FIELDS.index("g")]
        self.model.rule.assign(self._g0_q, g0)
        self._z_solver.solve()
        self.w.subfunctions[1].assign(self._z0)

    # ------------------------------------------------------------------ state
    @property
    def z(self) -> fd.Function:
        """The auxiliary field of the last step (a view into the mixed solution)."""
        return self.w.subfunctions[1]

    def reset(self, u: fd.Function, *, t: float = 0.0) -> None:
        """Restart from the state ``u`` at time ``t`` (records are kept).

        Newton's initial guess becomes ``(u, P z(u))``, the projection of the ``z`` equation at
        ``u``.
        """
        if u.function_space() != self.model.space:
            raise ValueError("reset: u must live on the model's state space")
        self.u.assign(u)
        self._u0.assign(u)
        self.t = float(t)
        self.w.subfunctions[0].assign(u)
        self._consistent = False
        self._prepare_step()
        self._initial_z()

    # ------------------------------------------------------------------ stepping
    def _solve(self, dt: float) -> tuple[bool, str, int, int]:
        self._dt.assign(dt)
        self._u0.assign(self.u)
        self._prepare_step()
        try:
            self.solver.solve()
        except fd.ConvergenceError as exc:
            reason = self.solver.snes.getConvergedReason()
            return False, f"SNES did not converge (reason {reason}): {exc}".splitlines()[0], 0, 0
        snes = self.solver.snes
        its, lits = snes.getIterationNumber(), snes.getLinearSolveIterations()
        finite = all(np.all(np.isfinite(v)) for v in self.w.dat.data_ro)
        if not on_all_ranks(self.model.mesh.comm, finite):
            return False, "the solution contains NaN or Inf", its, lits
        return True, "", its, lits

    def advance(self) -> StepRecord:
        """Take one step of size ``dt``; returns its :class:`~femeso.stepping.StepRecord`.

        A step whose Newton solve fails or whose solution is not finite is retried as two half
        steps (recursively, at most ``max_halvings`` times in a row).

        Raises
        ------
        StepFailure
            If the step cannot be completed; the message names the time and the reason.

        """
        self._consistent = False

        def accept(sub_dt: float) -> None:
            self.u.assign(self.w.subfunctions[0])

        counts = take_step(
            self, attempt=lambda sub_dt, _: self._solve(sub_dt), accept=accept, sub_dt=self.dt
        )
        # Without halvings, (u0, w, dt) is the converged system of the whole step: vjp applies.
        self._consistent = counts.halvings == 0
        nan = float("nan")
        record = StepRecord(
            t=self.t,
            dt=self.dt,
            energy=nan,
            energy_parts={},
            energy_change=nan,
            dissipation=nan,
            mass=self.model.mass(self.u),
            newton_iterations=counts.newton_iterations,
            linear_iterations=counts.linear_iterations,
            halvings=counts.halvings,
        )
        self.records.append(record)
        return record

    def _initial_energy(self) -> float:
        """Return nan: the baseline has no energy."""
        return float("nan")

    # ------------------------------------------------------------------ adjoint protocol
    def restore(self, u0: fd.Function, w1: fd.Function, dt: float | None = None) -> None:
        """Put the stepper into the converged state of a step from ``u0`` to ``w1``.

        Afterwards ``u`` is ``u0``, ``w`` is ``w1`` and the pointwise values are those of that
        iterate at the current parameters, so that :meth:`vjp` differentiates that step.

        Parameters
        ----------
        u0
            The state at the start of the step (on the model's state space).
        w1
            The converged mixed solution of the step (a ``Function`` on :attr:`W`, e.g. a copy
            of ``stepper.w`` saved after :meth:`advance`).
        dt
            The step size of that step (default: the stepper's ``dt``).

        """
        if u0.function_space() != self.model.space:
            raise ValueError("restore: u0 must live on the model's state space")
        if w1.function_space() != self.W:
            raise ValueError("restore: w1 must live on the stepper's mixed space W")
        step = self.dt if dt is None else _positive_step(dt)
        self.u.assign(u0)
        self._u0.assign(u0)
        self.w.assign(w1)
        self._dt.assign(step)
        self._prepare_step()
        self._update_values()
        self._consistent = True

    def _adjoint_forms(self) -> dict[str, Any]:
        """Return the adjoint state and the forms of the vector-Jacobian product (built once)."""
        if self._adjoint is None:
            rule = self.model.rule
            lam = fd.Function(self.W, name="adjoint")
            residual_lambda = ufl.action(self.residual, lam)
            u_mid = 0.5 * (self._u0 + fd.split(self.w)[0])
            v = fd.TestFunction(self.model.space)
            self._adjoint = {
                "lambda": lam,
                "rhs": fd.Cofunction(self.W.dual()),
                "fields": {
                    name: fd.derivative(residual_lambda, self.values_q[name]) for name in FIELDS
                },
                # R contains -(b grad u*, grad eta): dL/db = +(grad u*, grad lambda_z)
                "b": ufl.inner(ufl.grad(u_mid), ufl.grad(fd.split(lam)[1])) * rule.dx,
                # -(lambda^T dR/du0 with the fields fixed) + sum_q h_q phi_i(x_q), the latter
                # as int (h / w) phi_i with w the rule's weights (exact: same points, weights)
                "state": -fd.derivative(residual_lambda, self._u0) + self._h_q * v * rule.dx,
            }
        return self._adjoint

    def _adjoint_state(self, dL_du1: fd.Cofunction) -> fd.Function:
        """Solve ``J^T lambda = (dL/du1, 0)`` at the converged step (MUMPS)."""
        forms = self._adjoint_forms()
        lam, rhs = forms["lambda"], forms["rhs"]
        J = fd.assemble(self.jacobian, mat_type="aij")
        rhs.subfunctions[0].assign(dL_du1)
        ksp = lu_solver(self.W.mesh().comm)
        ksp.setOperators(J.petscmat)
        with rhs.dat.vec_ro as b, lam.dat.vec_wo as x:
            ksp.solveTranspose(b, x)
        reason = ksp.getConvergedReason()
        ksp.destroy()
        if reason < 0:
            raise RuntimeError(f"the adjoint solve failed (KSP reason {reason})")
        return lam

    def vjp(self, dL_du1: fd.Cofunction, *, wrt_state: bool = True) -> fd.Cofunction | None:
        r"""Back-propagate through the step: accumulate :math:`dL/d\theta`, return :math:`dL/du^0`.

        At the converged step :math:`R(w^1; u^0, \theta) = 0` (after :meth:`advance` without
        halvings, or after :meth:`restore`), solves :math:`J^T\lambda = (dL/du^1, 0)`, adds
        :math:`-\lambda^T\partial R/\partial\theta` to the parameters' ``.grad`` (summed over MPI
        ranks) and returns :math:`-\lambda^T\partial R/\partial u^0`: the direct dependence of
        the weak form on :math:`u^0` plus the dependence through the fields evaluated at the
        midpoint, mapped back from the quadrature points by the transpose of the sampling
        :math:`u \mapsto u(x_q)`.

        Parameters
        ----------
        dL_du1
            The derivative of the loss with respect to the new state, a ``Cofunction`` on the
            dual of the state space.
        wrt_state
            Also compute :math:`dL/du^0` (skip it for the first step of a chain).

        Returns
        -------
        firedrake.Cofunction or None
            :math:`dL/du^0` on the dual of the state space (``None`` without ``wrt_state``);
            pass it (plus any direct loss term in :math:`u^0`) to the :meth:`vjp` of the
            previous step.

        Raises
        ------
        ValueError
            If the stepper does not hold the converged system of one whole step (the last
            :meth:`advance` needed halvings, or :meth:`reset` came after it): call
            :meth:`restore` first.

        """
        if not self._consistent:
            raise ValueError(
                "vjp needs the converged system of one whole step: call restore(u0, w1, dt) "
                "first (the last advance needed halvings, or the stepper was reset)"
            )
        if dL_du1.function_space() != self.model.space.dual():
            raise ValueError("vjp: dL_du1 must be a Cofunction on the dual of the state space")
        model, rule = self.model, self.model.rule
        # Values at the current parameters and iterate (the parameters may have changed).
        self._prepare_step()
        self._update_values()
        self._adjoint_state(dL_du1)
        forms = self._adjoint_forms()
        sensitivities = {
            name: torch.as_tensor(fd.assemble(form).dat.data_ro.copy(), dtype=DTYPE)
            for name, form in forms["fields"].items()
        }
        u0_t = self._u0_t.clone().requires_grad_(wrt_state)
        u1_t = torch.as_tensor(self._last_u1, dtype=DTYPE)
        network = [p for p in model.network.parameters() if p.requires_grad]
        with torch.enable_grad():
            y = model.values(0.5 * (u0_t + u1_t))
            total = sum((y[:, j] * sensitivities[name]).sum() for j, name in enumerate(FIELDS))
            inputs = network + ([u0_t] if wrt_state else [])
            if inputs and total.requires_grad:
                grads = torch.autograd.grad(-total, inputs, allow_unused=True)
            else:
                grads = (None,) * len(inputs)
        comm = model.mesh.comm
        for p, g in zip(network, grads[: len(network)], strict=True):
            g = torch.zeros_like(p) if g is None else g.detach()
            if comm.size > 1:  # each rank holds the sum over its own quadrature points
                g = torch.as_tensor(comm.allreduce(g.numpy(), op=MPI.SUM))
            p.grad = g.clone() if p.grad is None else p.grad + g
        if model.b.requires_grad:  # a global form: no reduction over ranks
            g_b = torch.tensor(float(fd.assemble(forms["b"])), dtype=DTYPE)
            model.b.grad = g_b.clone() if model.b.grad is None else model.b.grad + g_b
        if not wrt_state:
            return None
        h = grads[-1] if grads[-1] is not None else torch.zeros_like(u0_t)
        rule.assign(self._h_q, h.detach()[:, 0] / rule.weights)  # h = dL/du0 at the points
        return fd.assemble(forms["state"])


def _positive_step(dt: Any) -> float:
    if not (isinstance(dt, int | float) and not isinstance(dt, bool) and math.isfinite(dt)):
        raise ValueError(f"dt must be a positive number, got {dt!r}")
    if dt <= 0:
        raise ValueError(f"dt must be a positive number, got {dt!r}")
    return float(dt)
