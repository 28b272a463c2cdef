r"""Energy-stable implicit time stepping for every member of the Onsager class.

One step from :math:`u^n` to :math:`u^{n+1}` solves, for :math:`(u^{n+1}, \mu)` in the mixed space
``V x V`` and all test functions :math:`(v, \eta)`,

.. math::

    (u^{n+1} - u^n, v) + \Delta t\,\big[a_M(u^*; \mu, v) + a_W(\mu, v)\big] &= 0, \\
    (\mu, \eta) - (\bar\mu_F(u^n, u^{n+1}), \eta)
      - (\kappa\nabla u^{n+\frac12}, \nabla\eta) &= 0,

with :math:`\bar\mu_F` the pointwise discrete gradient of the density
(:mod:`femeso.stepping.discrete_gradients`), :math:`u^{n+1/2}` the midpoint and :math:`u^*` the
state at which the mobility is evaluated: the midpoint for ``scheme="midpoint"`` (second order, the
default) or :math:`u^n` for ``scheme="linearised"`` (first order, cheaper Jacobian). Taking
:math:`v = \mu` and :math:`\eta = u^{n+1} - u^n`, with every term and :math:`V_h` integrated by the
same quadrature rule,

.. math:: V_h(u^{n+1}) - V_h(u^n) = -\Delta t\, a_M(u^*; \mu, \mu) \le 0

exactly, for every :math:`\Delta t > 0` and every parameter value; :math:`= 0` when :math:`M = 0`;
and :math:`\int u^{n+1} = \int u^n` for conserved mobilities (test with :math:`v = 1`). The
nonlinear system is solved by PETSc SNES (Newton with line search) with exact Jacobians: the
pointwise fields are evaluated in PyTorch at the quadrature points before every residual and
Jacobian evaluation, and their derivatives enter the Jacobian form.

Dirichlet conditions on ``u`` (time-independent data) come with homogeneous conditions on
:math:`\mu` on the same boundary: :math:`\mu` is then the gradient of :math:`V` within the
constrained space, and the energy law above holds unchanged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import firedrake as fd
import numpy as np
import torch
import ufl
from firedrake.petsc import PETSc
from firedrake.preconditioners.base import PCBase
from mpi4py import MPI

from femeso._log import logger, progress_bar
from femeso.model.fields import DTYPE
from femeso.model.mobilities import TensorMobility
from femeso.model.onsager import OnsagerModel, components
from femeso.stepping.adjoint import step_vjp
from femeso.stepping.coefficients import StepCoefficients
from femeso.stepping.control import StepFailure, take_step
from femeso.stepping.discrete_gradients import DEFAULT_TOL, discrete_gradient_and_jacobian
from femeso.stepping.solvers import DIRECT_SOLVER, ITERATIVE_SOLVER, LU

__all__ = [
    "DIRECT_SOLVER",
    "ITERATIVE_SOLVER",
    "EnergyStableStepper",
    "StepFailure",
    "StepRecord",
    "Trajectory",
]

SCHEMES = ("midpoint", "linearised")

#: A Newton solve that stalls (line-search failure or iteration limit) with a residual within this
#: factor of its round-off floor (1e-14 of the norms of the residual's terms) is accepted: measured
#: on the FENE chain model, Newton reached 5e-12 in 3 iterations and then stalled at 1.8e-12, just
#: above a floor of 1.7e-12, and each such step was halved 5-11 times. A tighter floor is kept for
#: the solves that do converge (a floor of 1e-13 left an energy-law defect of 1.7e-13 in a test).
ROUND_OFF_STAGNATION = 100.0
_STALLED = (
    PETSc.SNES.ConvergedReason.DIVERGED_LINE_SEARCH,
    PETSc.SNES.ConvergedReason.DIVERGED_MAX_IT,
)


@dataclass
class StepRecord:
    """What one accepted step did.

    Attributes
    ----------
    t
        Time at the end of the step.
    dt
        The step size asked for (sub-steps of it may have been taken, see ``halvings``).
    energy
        ``V_h(u^{n+1})``.
    energy_parts
        ``{"pointwise", "gradient", "nonlocal", "total"}``.
    energy_change
        ``V_h(u^{n+1}) - V_h(u^n)``.
    dissipation
        The discrete dissipation rate ``a_M(u^*; mu, mu) >= 0`` of the (last sub-)step.
    mass
        ``int u_i`` per component.
    newton_iterations, linear_iterations
        Totals over the step's sub-steps.
    halvings
        How often the step size was halved to complete the step.

    """

    t: float
    dt: float
    energy: float
    energy_parts: dict[str, float]
    energy_change: float
    dissipation: float
    mass: list[float]
    newton_iterations: int
    linear_iterations: int
    halvings: int = 0


@dataclass
class Trajectory:
    """A rollout: times, states (copies of the state ``Function``) and per-step records."""

    times: np.ndarray
    states: list[fd.Function]
    records: list[StepRecord] = field(default_factory=list)

    @property
    def energies(self) -> np.ndarray:
        """Energy at each stored time (the first from the initial state)."""
        return np.array([self.initial_energy] + [r.energy for r in self.records])

    initial_energy: float = float("nan")


@dataclass
class _MuProjection:
    """The L2 projection of dV/du that starts Newton's mu: built once per stepper."""

    mu: fd.Function
    dF_q: list[fd.Function]
    dN: list[fd.Constant]
    solver: fd.LinearVariationalSolver


class SteppingLoop:
    """Rollouts and solver statistics of any stepper with ``advance``, ``u``, ``t``, ``dt``."""

    def rollout(
        self,
        n_steps: int | None = None,
        *,
        t_end: float | None = None,
        store_every: int = 1,
        progress: bool = False,
    ) -> Trajectory:
        """Advance ``n_steps`` steps (or up to ``t_end``) and return the trajectory.

        Parameters
        ----------
        n_steps, t_end
            How far to go (exactly one of them).
        store_every
            Keep every ``store_every``-th state (records are kept for every step).
        progress
            Show a progress bar (rank 0).

        """
        if (n_steps is None) == (t_end is None):
            raise ValueError("give exactly one of n_steps and t_end")
        if n_steps is None:
            n_steps = int(round((t_end - self.t) / self.dt))
            if n_steps < 0 or not math.isclose(
                self.t + n_steps * self.dt, t_end, rel_tol=1e-9, abs_tol=1e-12
            ):
                raise ValueError(
                    f"t_end={t_end} is not a whole number of steps dt={self.dt} after t={self.t}"
                )
        if store_every < 1:
            raise ValueError(f"store_every must be >= 1, got {store_every}")
        traj = Trajectory(
            times=np.array([self.t]),
            states=[self.u.copy(deepcopy=True)],
            initial_energy=self._initial_energy(),
        )
        times = [self.t]
        bar = progress_bar(n_steps, "femeso rollout", "step", enabled=progress)
        t0 = time.perf_counter()
        for n in range(1, n_steps + 1):
            record = self.advance()
            traj.records.append(record)
            if n % store_every == 0 or n == n_steps:
                traj.states.append(self.u.copy(deepcopy=True))
                times.append(self.t)
            if bar is not None:
                postfix = {"t": f"{self.t:.4g}"}
                if math.isfinite(record.energy):
                    postfix["V"] = f"{record.energy:.5g}"
                bar.set_postfix(postfix, refresh=False)
                bar.update()
        if bar is not None:
            bar.close()
        traj.times = np.array(times)
        logger.debug("rollout of %d steps in %.2f s", n_steps, time.perf_counter() - t0)
        return traj

    def solver_stats(self) -> dict[str, int]:
        """Return total Newton and linear iterations and halvings over all steps so far."""
        return {
            "steps": len(self.records),
            "newton_iterations": sum(r.newton_iterations for r in self.records),
            "linear_iterations": sum(r.linear_iterations for r in self.records),
            "halvings": sum(r.halvings for r in self.records),
        }


class EnergyStableStepper(SteppingLoop):
    r"""Discrete-gradient time stepper for an :class:`~femeso.model.OnsagerModel`.

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
    scheme
        ``"midpoint"`` (second order) or ``"linearised"`` (mobility at :math:`u^n`, first order).
    bcs
        Dirichlet conditions on ``u`` as ``(value, subdomain)`` pairs (time-independent values);
        ``mu`` gets homogeneous conditions on the same subdomains.
    source
        Optional forcing ``f(t)`` (UFL, evaluated at the step midpoint) added to the state
        equation, for verification with manufactured solutions; it breaks the energy law.
    solver_parameters
        PETSc options, merged over :data:`DIRECT_SOLVER` (pass :data:`ITERATIVE_SOLVER` for large
        meshes).
    max_halvings
        How often in a row a failed (sub-)step (Newton failure or energy increase) is retried with
        half the step before :class:`StepFailure` is raised; after a success the sub-step grows
        again.
    energy_rtol
        Relative tolerance of the "no energy increase" check (rounding and solver tolerance).
    substeps
        Scheme steps per step: :meth:`advance` takes ``substeps`` steps of ``dt / substeps``
        (each one dissipative, so the step is). A learned model used at a large data step can
        then be integrated more accurately than by one midpoint step -- e.g. the phase error of
        dispersive (KdV-like) modes falls as ``substeps**-2`` -- and is trained that way
        (:mod:`femeso.training.trainer` back-propagates through every sub-step).

    Attributes
    ----------
    substep_log
        With :attr:`log_substeps` set, the accepted sub-steps of the last :meth:`advance` as
        ``(u_start, w_converged, sub_dt)`` copies: what :meth:`restore` needs for adjoints.
    round_off_stops
        How many Newton solves ended at the round-off level (:meth:`_converged`).

    """

    def __init__(
        self,
        model: OnsagerModel,
        u0: fd.Function,
        dt: float,
        *,
        t0: float = 0.0,
        scheme: str = "midpoint",
        bcs: Sequence[tuple[Any, Any]] = (),
        source: Callable[[fd.Constant], Any] | None = None,
        solver_parameters: dict[str, Any] | None = None,
        max_halvings: int = 8,
        energy_rtol: float = 1e-9,
        options_prefix: str | None = None,
        substeps: int = 1,
    ) -> None:
        if not isinstance(model, OnsagerModel):
            raise TypeError(f"model must be an OnsagerModel, got {type(model).__name__}")
        if not (isinstance(dt, int | float) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive number, got {dt!r}")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        if not isinstance(substeps, int) or isinstance(substeps, bool) or substeps < 1:
            raise ValueError(f"substeps must be an integer >= 1, got {substeps!r}")
        self.substeps = substeps
        self.log_substeps = False
        self.substep_log: list[tuple[fd.Function, fd.Function, float]] = []
        if u0.function_space() != model.space:
            raise ValueError("u0 must live on the model's state space")
        self.model, self.scheme, self.dt = model, scheme, float(dt)
        self.t = float(t0)
        self.max_halvings, self.energy_rtol = max_halvings, energy_rtol
        # A manufactured source does work on the system: the energy check does not apply then.
        self._has_source = source is not None
        V = model.space
        k = self.k = model.n_states
        rule = model.rule
        self.W = V * V
        self.u = fd.Function(V, name="u").assign(u0)  # the current state u^n
        self.w = fd.Function(self.W, name="u_mu")
        self.w.subfunctions[0].assign(u0)
        # A nonlocal energy part N(c(u)) of r moments: its discrete gradient enters the mu
        # equation with r coefficients G_j; its rank-r Jacobian is applied exactly by
        # LowRankCorrectionPC (Woodbury) around the LU factorisation of the rest.
        nonlocal_part = model.energy.nonlocal_part
        self.n_moments = nonlocal_part.n_moments if nonlocal_part is not None else 0
        if self.n_moments:
            R = fd.FunctionSpace(model.mesh, "R", 0)
            X = ufl.SpatialCoordinate(model.mesh)
            self._phis = [phi(X) / model.volume for phi in nonlocal_part.basis]
            self.G = [fd.Function(R) for _ in range(self.n_moments)]
            self._moment_forms = [fd.split(self.w)[0] * phi * model.rule.dx for phi in self._phis]
            self._D = np.zeros((self.n_moments, self.n_moments))
        self._dt = fd.Constant(self.dt)
        self._t_mid = fd.Constant(self.t + 0.5 * self.dt)

        # ---- values at the quadrature points, refreshed from PyTorch
        self._u1_q = rule.function(() if k == 1 else (k,))
        #: The pointwise coefficients the forms read (:mod:`femeso.stepping.coefficients`).
        self.coefficients = StepCoefficients(model, midpoint_mobility=scheme == "midpoint")

        # ---- the forms
        self.residual = self._form(linearised=False, source=source)
        self.jacobian = fd.derivative(self._form(linearised=True, source=source), self.w)
        dirichlet = []
        for value, subdomain in bcs:
            dirichlet.append(fd.DirichletBC(self.W.sub(0), value, subdomain))
            dirichlet.append(fd.DirichletBC(self.W.sub(1), 0, subdomain))
        self.bcs = dirichlet
        self.dissipation_form = self._dissipation_form()
        params = {**DIRECT_SOLVER, **(solver_parameters or {})}
        if self.n_moments:
            params.update(
                {
                    "ksp_type": "preonly",
                    "pc_type": "python",
                    "pc_python_type": "femeso.stepping.energy_stable.LowRankCorrectionPC",
                }
            )
            self._low_rank_vectors()
        self.solver_parameters = params
        problem = fd.NonlinearVariationalProblem(
            self.residual, self.w, bcs=dirichlet, J=self.jacobian
        )
        self.solver = fd.NonlinearVariationalSolver(
            problem,
            solver_parameters=params,
            options_prefix=options_prefix,
            pre_function_callback=self._update_pointwise,
            pre_jacobian_callback=self._update_pointwise,
            appctx={"femeso_stepper": self},
        )
        self.solver.snes.setConvergenceTest(self._converged)
        self._last_u1: np.ndarray | None = None
        self._snes_atol = float(params.get("snes_atol", 1e-50))
        self._stagnation_limit = self._snes_atol
        self._initial_fnorm = self._previous_fnorm = math.inf
        #: Newton solves stopped at the round-off level (:meth:`_converged`) since construction.
        self.round_off_stops = 0
        test = fd.TestFunction(V)
        ones = ufl.as_vector([1.0] * self.k) if self.k > 1 else 1.0
        self._lumped_mass = fd.assemble(ufl.inner(test, ones) * fd.dx)
        self._gradient_terms = sum(
            self.coefficients.kappa[i] * ufl.inner(ufl.grad(uc), ufl.grad(vc)) * model.rule.dx
            for i, (uc, vc) in enumerate(
                zip(components(self.u, self.k), components(test, self.k), strict=True)
            )
        )
        self._gradient_vector = fd.Cofunction(V.dual())
        self._weighted = fd.Cofunction(V.dual())  # work vector of _round_off_tolerance
        self._energy_cache: tuple | None = None
        self._mu_projection: _MuProjection | None = None
        #: Whether :meth:`restore` put a converged step in place for :meth:`vjp`.
        self.holds_step = False
        self._prepare_step()
        self._initial_mu()
        self.records: list[StepRecord] = []

    # ------------------------------------------------------------------ forms
    def _form(self, *, linearised: bool, source) -> ufl.Form:
        """Return the residual; with ``linearised`` the pointwise values carry their derivatives.

        The linearised form equals the residual at the current iterate (the values are sampled
        there) and its UFL derivative is the exact Jacobian of the residual.
        """
        model, k, dx = self.model, self.k, self.model.rule.dx
        c = self.coefficients
        u1, mu = fd.split(self.w)
        v, eta = fd.TestFunctions(self.W)
        u0 = self.u
        u1c, u0c = components(u1, k), components(u0, k)
        muc, vc, etac = components(mu, k), components(v, k), components(eta, k)
        increments = [u1c[j] - c.lin[j] for j in range(k)]

        def with_derivative(values, derivatives, i):
            if not linearised or derivatives is None:
                return values[i]
            return values[i] + sum(derivatives[i][j] * increments[j] for j in range(k))

        form = 0
        for i in range(k):
            u_mid = 0.5 * (u0c[i] + u1c[i])
            dg = with_derivative(c.dg, c.dg_slope, i)
            form += (u1c[i] - u0c[i]) * vc[i] * dx
            form += muc[i] * etac[i] * dx - dg * etac[i] * dx
            form += -c.kappa[i] * ufl.inner(ufl.grad(u_mid), ufl.grad(etac[i])) * dx
            for kind, values in c.mobility.items():
                m = with_derivative(values, c.mobility_slope.get(kind), i)
                form += self._dt * c.mobility_parts[kind].form(m, muc[i], vc[i], dx)
        if c.tensor_mobility is not None:
            M = c.tensor_mobility
            form += self._dt * sum(TensorMobility.form(M, muc[i], vc[i], dx) for i in range(k))
        for w, coefficient in zip(model.conservative, c.conservative, strict=True):
            form += self._dt * w.form(coefficient, muc, vc, dx)
        if self.n_moments:
            form += -sum(G * phi for G, phi in zip(self.G, self._phis, strict=True)) * eta * dx
        if source is not None:
            f = components(source(self._t_mid), k)
            form += -self._dt * sum(f[i] * vc[i] for i in range(k)) * dx
        return form

    def _dissipation_form(self) -> ufl.Form | None:
        k, dx, c = self.k, self.model.rule.dx, self.coefficients
        mu = fd.split(self.w)[1]
        muc = components(mu, k)
        form = 0
        for kind, values in c.mobility.items():
            form += sum(
                c.mobility_parts[kind].form(values[i], muc[i], muc[i], dx) for i in range(k)
            )
        if c.tensor_mobility is not None:
            M = c.tensor_mobility
            form += sum(TensorMobility.form(M, muc[i], muc[i], dx) for i in range(k))
        return form if form != 0 else None

    # ------------------------------------------------------------------ pointwise values
    def _prepare_step(self) -> None:
        """Evaluate what stays fixed during a step: u^n at the points, F(u^n), kappa, W, M(u^n)."""
        model = self.model
        with torch.no_grad():
            _, self._u0_t, self._F0 = self._current_energy()
        self.coefficients.assign_fixed(self._u0_t, self._F0)
        if self.n_moments:
            with torch.no_grad():
                self._c0 = model.moments(self.u)
                self._N0 = model.energy.nonlocal_part(self._c0)
            self._last_c = None
        self._last_u1 = None

    def _low_rank_vectors(self) -> None:
        """Assemble B (mu rows) and A (u columns) of the nonlocal Jacobian J0 - B D A^T."""
        v, eta = fd.TestFunctions(self.W)
        dx = self.model.rule.dx

        def vec(form):
            f = fd.Function(self.W)
            cof = fd.assemble(form)
            for dst, src in zip(f.subfunctions, cof.subfunctions, strict=True):
                dst.dat.data_wo[...] = src.dat.data_ro
            for bc in self.bcs:  # no low-rank coupling in Dirichlet rows and columns
                bc.zero(f)
            with f.dat.vec_ro as x:
                return x.copy()

        self._B = [vec(phi * eta * dx) for phi in self._phis]
        self._A = [vec(phi * v * dx) for phi in self._phis]

    def _update_nonlocal(self) -> None:
        """Refresh G (discrete gradient of N between c(u^n) and c(iterate)) and D = dG/dc."""
        c1 = np.array([fd.assemble(form) for form in self._moment_forms])
        if self._last_c is not None and np.array_equal(c1, self._last_c):
            return
        self._last_c = c1
        values, jac = discrete_gradient_and_jacobian(
            self.model.energy.nonlocal_part,
            self._c0,
            torch.as_tensor(c1[None, :], dtype=DTYPE),
            None,
            F0=self._N0,
            tol=DEFAULT_TOL,
        )
        for j in range(self.n_moments):
            self.G[j].assign(float(values[0, j]))
        self._D = jac[0].numpy().copy()

    def _current_energy(self) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """Energy parts, pointwise state and density of u^n, reused from the accepted step.

        The cache is keyed on the state's values and on the model's parameters, so a user who
        changes ``stepper.u`` or an optimiser that updates the parameters gets fresh numbers.
        """
        cache = self._energy_cache
        theta = self._parameter_vector()
        fresh = (
            cache is not None
            and torch.equal(cache[1], theta)
            and np.array_equal(cache[0], self.u.dat.data_ro)
        )
        # Decided on all ranks together: recomputing is collective.
        if not on_all_ranks(self.model.mesh.comm, fresh):
            parts, u_q, F_q = self.model.energy_parts_and_values(self.u)
            cache = self._energy_cache = (self.u.dat.data_ro.copy(), theta, parts, u_q, F_q)
        return cache[2], cache[3], cache[4]

    def _parameter_vector(self) -> torch.Tensor:
        params = [p.detach().reshape(-1) for p in self.model.parameters()]
        return torch.cat(params).clone() if params else torch.zeros(0, dtype=DTYPE)

    def reset(self, u: fd.Function, *, t: float = 0.0) -> None:
        """Restart from the state ``u`` at time ``t`` (records are kept).

        Newton's initial guess becomes ``(u, P(dV/du))``; use it to step from data states, e.g.
        in training, without building a new stepper (and solver) for each one.
        """
        if u.function_space() != self.model.space:
            raise ValueError("reset: u must live on the model's state space")
        self.u.assign(u)
        self.t = float(t)
        self.w.subfunctions[0].assign(u)
        self._prepare_step()
        self._initial_mu()
        self.holds_step = False

    def restore(self, u0: fd.Function, w1: fd.Function, dt: float | None = None) -> None:
        """Put the stepper in the converged state of a step from ``u0`` to ``w1`` (for adjoints).

        Parameters
        ----------
        u0
            The state the step started from.
        w1
            The converged unknowns ``(u^{n+1}, mu)`` of the step (a copy of :attr:`w` taken
            after :meth:`advance`).
        dt
            The step's size (default: one planned sub-step, ``dt / substeps``).

        """
        if u0.function_space() != self.model.space or w1.function_space() != self.W:
            raise ValueError("restore: u0 must live on the state space and w1 on the mixed space")
        self._dt.assign(self.dt / self.substeps if dt is None else dt)
        if w1 is self.w:
            w1 = w1.copy(deepcopy=True)
        self.u.assign(u0)
        self._prepare_step()
        self.w.assign(w1)
        with w1.dat.vec_ro as x:
            self._update_pointwise(x)
        self.holds_step = True

    def vjp(self, dL_du1: fd.Cofunction, *, wrt_state: bool = True) -> fd.Cofunction | None:
        """Back-propagate dL/du1 through the held step (:func:`~femeso.stepping.step_vjp`)."""
        return step_vjp(self, dL_du1, wrt_state=wrt_state)

    def _update_pointwise(self, X) -> None:
        """Sample the SNES iterate; refresh pointwise values and derivatives once per iterate."""
        with self.w.dat.vec_wo as w_vec:
            X.copy(w_vec)
        if self.n_moments:
            self._update_nonlocal()
        self.model.rule.sample(self.w.subfunctions[0], out=self._u1_q)
        u1 = self._u1_q.dat.data_ro.reshape(-1, self.k)
        unchanged = self._last_u1 is not None and np.array_equal(u1, self._last_u1)
        # Decided on all ranks together: writing the pointwise values marks their halos dirty,
        # and ranks that disagree on that would pair up different halo exchanges (deadlock).
        if on_all_ranks(self.model.mesh.comm, unchanged):
            return
        self._last_u1 = u1.copy()
        self.coefficients.assign_iterate(torch.as_tensor(self._last_u1, dtype=DTYPE))

    def _initial_mu(self) -> None:
        """Set the initial guess of mu to the L2 projection of dV/du at u^n.

        The projection's forms and solver are built once (:meth:`_initial_mu_solver`): a
        ``fd.solve`` per call built a new solver, KSP and MUMPS factorisation on every
        :meth:`reset` and leaked about 150-350 bytes of C memory each time (training resets the
        stepper once per window; ``bench/train_cost.py``).
        """
        model, k = self.model, self.k
        u0_t = self._u0_t.clone().requires_grad_(True)
        with torch.enable_grad():
            (dF,) = torch.autograd.grad(model.density(u0_t).sum(), u0_t)
        projection = self._mu_projection
        if projection is None:
            projection = self._initial_mu_solver()
        for i in range(k):
            model.rule.assign(projection.dF_q[i], dF[:, i])
        if self.n_moments:
            c0 = self._c0.clone().requires_grad_(True)
            with torch.enable_grad():
                (dN,) = torch.autograd.grad(model.energy.nonlocal_part(c0).sum(), c0)
            for j, value in enumerate(projection.dN):
                value.assign(float(dN[0, j]))
        # Firedrake solves for the correction from the current value: start from zero, so that
        # mu does not depend (in its last bits) on the previous reset.
        projection.mu.dat.zero()
        projection.solver.solve()
        self.w.subfunctions[1].assign(projection.mu)

    def _initial_mu_solver(self) -> _MuProjection:
        """Build the projection of :meth:`_initial_mu` (its mass matrix factorised once)."""
        model, k = self.model, self.k
        V, rule = model.space, model.rule
        mu = fd.Function(V)
        dF_q = [rule.function() for _ in range(k)]
        m, eta = fd.TrialFunction(V), fd.TestFunction(V)
        uc, etac = components(self.u, k), components(eta, k)
        rhs = sum(
            dF_q[i] * etac[i] * rule.dx
            + self.coefficients.kappa[i] * ufl.inner(ufl.grad(uc[i]), ufl.grad(etac[i])) * rule.dx
            for i in range(k)
        )
        dN = [fd.Constant(0.0) for _ in range(self.n_moments)]
        if self.n_moments:
            rhs += sum(c * phi for c, phi in zip(dN, self._phis, strict=True)) * eta * rule.dx
        problem = fd.LinearVariationalProblem(
            ufl.inner(m, eta) * rule.dx, rhs, mu, constant_jacobian=True
        )
        solver = fd.LinearVariationalSolver(problem, solver_parameters=LU)
        self._mu_projection = _MuProjection(mu, dF_q, dN, solver)
        return self._mu_projection

    # ------------------------------------------------------------------ stepping
    def _round_off_tolerance(self, dt: float) -> None:
        """Raise SNES's absolute tolerance to the round-off level of the residual, if higher.

        The residual balances terms of sizes ``|u_i| m_i / dt``, ``|mu_i| m_i`` (``m_i`` the
        lumped mass) and ``(kappa grad u, grad phi_i)``; its floating-point floor is about 1e-15
        of their norms. For energies of large scale (e.g. Allen--Cahn's ``F'`` of order
        ``1/eps^2``), fine meshes or small steps that floor exceeds the fixed ``snes_atol`` and
        Newton would stall there and be reported as a failure. A solve that stalls (line search
        or iteration limit) within :data:`ROUND_OFF_STAGNATION` times that floor is accepted
        (:meth:`_solve`).
        """
        size = fd.assemble(self._gradient_terms, tensor=self._gradient_vector).dat.norm
        with self._lumped_mass.dat.vec_ro as weights:
            for f, factor in ((self.w.subfunctions[1], 1.0), (self.u, 1.0 / dt)):
                with f.dat.vec_ro as values, self._weighted.dat.vec_wo as terms:
                    terms.pointwiseMult(values, weights)
                    size += factor * terms.norm()
        floor = 1e-14 * size
        snes = self.solver.snes
        rtol, _, stol, max_it = snes.getTolerances()
        snes.setTolerances(rtol=rtol, atol=max(self._snes_atol, floor), stol=stol, max_it=max_it)
        self._stagnation_limit = max(self._snes_atol, ROUND_OFF_STAGNATION * floor)

    def _converged(self, snes, its: int, norms: tuple[float, float, float]):
        """SNES convergence test: PETSc's default tests, and a stop at the round-off level.

        The default tests (NaN, absolute, relative, step and divergence tolerances) come first.
        Then a Newton iterate whose residual is within the stagnation limit of the round-off
        floor (:meth:`_round_off_tolerance`) and which did not halve the previous residual is
        converged as far as floating point allows: Newton has stopped converging quadratically
        because the residual is round-off. Without this stop such a solve ran to the iteration
        limit with tiny line-search steps and was then accepted as stalled (measured on a learned
        double-well model of the curved channel: 2 iterations to 1.4e-12, then 28 more between
        1.0e-12 and 4.1e-12, 23 Newton iterations per step on average against 3 for the true
        model, 0.72 s per step against 0.034 s). The state accepted is the same kind either way:
        a residual within the stagnation limit.
        """
        xnorm, step_norm, fnorm = norms
        reasons = PETSc.SNES.ConvergedReason
        rtol, atol, stol, _ = snes.getTolerances()
        if its == 0:
            self._initial_fnorm = fnorm
            self._previous_fnorm = math.inf
        previous, self._previous_fnorm = self._previous_fnorm, fnorm
        if not math.isfinite(fnorm):
            return reasons.DIVERGED_FNORM_NAN
        if fnorm < atol:
            return reasons.CONVERGED_FNORM_ABS
        if its == 0:
            return reasons.ITERATING
        if fnorm <= rtol * self._initial_fnorm:
            return reasons.CONVERGED_FNORM_RELATIVE
        if step_norm < stol * xnorm:
            return reasons.CONVERGED_SNORM_RELATIVE
        divergence = snes.getDivergenceTolerance()
        if divergence > 0 and fnorm > divergence * self._initial_fnorm:
            return reasons.DIVERGED_DTOL
        if fnorm <= self._stagnation_limit and fnorm > 0.5 * previous:
            self.round_off_stops += 1
            logger.debug(
                "Newton stopped at the round-off level after %d iterations (residual %.3e, "
                "previous %.3e)",
                its,
                fnorm,
                previous,
            )
            return reasons.CONVERGED_ITS
        return reasons.ITERATING

    def _solve(self, dt: float) -> tuple[bool, str, int, int]:
        self._dt.assign(dt)
        self._t_mid.assign(self.t + 0.5 * dt)
        self._prepare_step()
        self._round_off_tolerance(dt)
        try:
            self.solver.solve()
        except fd.ConvergenceError as exc:
            snes = self.solver.snes
            reason, residual = snes.getConvergedReason(), snes.getFunctionNorm()
            stalled = reason in _STALLED and residual <= self._stagnation_limit
            if not on_all_ranks(self.model.mesh.comm, stalled):
                message = f"SNES did not converge (reason {reason}): {exc}".splitlines()[0]
                return False, message, 0, 0
            logger.debug(
                "Newton stalled at the round-off level (residual %.3e, reason %d): accepted",
                residual,
                reason,
            )
        snes = self.solver.snes
        its, lits = snes.getIterationNumber(), snes.getLinearSolveIterations()
        finite = all(np.all(np.isfinite(v)) for v in self.w.dat.data_ro)
        if not on_all_ranks(self.model.mesh.comm, finite):
            return False, "the solution contains NaN or Inf", its, lits
        return True, "", its, lits

    def advance(self) -> StepRecord:
        """Take one step of size ``dt``; returns its :class:`StepRecord`.

        A step whose Newton solve fails, or whose energy would increase, is rejected and retried
        as two half steps (recursively, at most ``max_halvings`` times); a state with increased
        energy is never accepted.

        Raises
        ------
        StepFailure
            If the step cannot be completed; the message names the time and the reason.

        """
        self.holds_step = False
        self.substep_log = []
        V_start = self._current_energy()[0]["total"]
        accepted: dict = {}

        def attempt(sub_dt: float, halvings: int) -> tuple[bool, str, int, int]:
            V_before = self._current_energy()[0]["total"] if halvings else V_start
            ok, reason, its, lits = self._solve(sub_dt)
            if ok:
                u1 = self.w.subfunctions[0]
                parts, u1_q, F1_q = self.model.energy_parts_and_values(u1)
                scale = abs(parts["pointwise"]) + abs(parts["gradient"]) + 1e-300
                increase = parts["total"] - V_before
                if not math.isfinite(parts["total"]):
                    ok, reason = False, "the energy is not finite (did the state leave its domain?)"
                elif increase > self.energy_rtol * scale and not self._has_source:
                    ok, reason = False, f"energy increased by {increase:.3e}"
                accepted.update(parts=parts, u1_q=u1_q, F1_q=F1_q)
            return ok, reason, its, lits

        def accept(sub_dt: float) -> None:
            form = self.dissipation_form
            accepted["dissipation"] = fd.assemble(form) if form is not None else 0.0
            if self.log_substeps:
                self.substep_log.append(
                    (self.u.copy(deepcopy=True), self.w.copy(deepcopy=True), sub_dt)
                )
            self.u.assign(self.w.subfunctions[0])
            self._energy_cache = (
                self.u.dat.data_ro.copy(),
                self._parameter_vector(),
                accepted["parts"],
                accepted["u1_q"],
                accepted["F1_q"],
            )

        counts = take_step(self, attempt=attempt, accept=accept, sub_dt=self.dt / self.substeps)
        parts, dissipation = accepted["parts"], accepted["dissipation"]
        record = StepRecord(
            t=self.t,
            dt=self.dt,
            energy=parts["total"],
            energy_parts=parts,
            energy_change=parts["total"] - V_start,
            dissipation=float(dissipation),
            mass=self.model.mass(self.u),
            newton_iterations=counts.newton_iterations,
            linear_iterations=counts.linear_iterations,
            halvings=counts.halvings,
        )
        self.records.append(record)
        return record

    @property
    def mu(self) -> fd.Function:
        """The chemical potential of the last step (a view into the mixed solution)."""
        return self.w.subfunctions[1]

    def _initial_energy(self) -> float:
        """Energy of the current state (the first entry of a rollout's energies)."""
        return self.model.energy_value(self.u)


def on_all_ranks(comm, flag: bool) -> bool:
    """Return whether ``flag`` holds on every rank of ``comm``.

    Decisions that gate collective work (assembly, halo exchanges, solves) must be taken by all
    ranks together; a per-rank test of local data is not enough (ranks that disagree deadlock).
    """
    return bool(comm.allreduce(int(flag), op=MPI.MIN))


class LowRankCorrectionPC(PCBase):
    r"""Exact Newton steps with a nonlocal energy part: Woodbury around an LU factorisation.

    The Jacobian is :math:`J = J_0 - B D A^T` with :math:`J_0` the assembled (sparse) Jacobian,
    :math:`B, A` the ``r`` moment vectors and :math:`D` the ``r x r`` derivative of the discrete
    gradient of :math:`N`. With :math:`Z = J_0^{-1} B` (``r`` extra solves per Jacobian),

    .. math:: J^{-1} x = y_0 + Z D (I - A^T Z D)^{-1} A^T y_0, \qquad y_0 = J_0^{-1} x.

    The LU factorisation of :math:`J_0` uses MUMPS (options prefix ``<prefix>lowrank_``).
    """

    def initialize(self, pc):
        """Create the inner LU preconditioner."""
        _, P = pc.getOperators()
        self.stepper = self.get_appctx(pc)["femeso_stepper"]
        self.inner = PETSc.PC().create(comm=pc.comm)
        self.inner.setOptionsPrefix((pc.getOptionsPrefix() or "") + "lowrank_")
        self.inner.setType(LU["pc_type"])
        self.inner.setFactorSolverType(LU["pc_factor_mat_solver_type"])
        self.inner.setFromOptions()
        self.update(pc)

    def update(self, pc):
        """Refactor J0 and recompute Z = J0^{-1} B and the small matrix for the new Jacobian."""
        A, P = pc.getOperators()
        self.inner.setOperators(A, P)
        self.inner.setUp()
        st = self.stepper
        self.Z = []
        for b in st._B:
            z = b.duplicate()
            self.inner.apply(b, z)
            self.Z.append(z)
        r = st.n_moments
        AtZ = np.array([[a.dot(z) for z in self.Z] for a in st._A])
        self.D = st._D.copy()
        self.small = np.eye(r) - AtZ @ self.D

    def apply(self, pc, x, y):
        """Return the exact Newton correction ``y = J^{-1} x``."""
        self.inner.apply(x, y)
        s = np.array([a.dot(y) for a in self.stepper._A])
        t = self.D @ np.linalg.solve(self.small, s)
        for z, coefficient in zip(self.Z, t, strict=True):
            y.axpy(coefficient, z)

    def applyTranspose(self, pc, x, y):
        """Not needed by Newton's method."""
        raise NotImplementedError("LowRankCorrectionPC.applyTranspose")
