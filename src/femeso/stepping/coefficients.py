r"""The values at the quadrature points that a step's forms read, defined once.

A step of :class:`~femeso.stepping.energy_stable.EnergyStableStepper` depends on the networks only
through a few *coefficients* sampled at the quadrature points: the discrete gradient
:math:`\bar\mu_F(u^n, u^{n+1})` of the density, the gradient coefficients :math:`\kappa`, the
mobility coefficients by kind (at :math:`u^n` or at the midpoint), the mobility tensor and the
coefficient of each conservative part. :class:`StepCoefficients` owns their quadrature
functions (what the UFL forms read) and their PyTorch definitions (how they depend on
:math:`\theta` and on the two states):

* the stepper writes their values, and the slopes in :math:`u^{n+1}` that the exact Jacobian
  needs, once per step (:meth:`~StepCoefficients.assign_fixed`) and once per Newton iterate
  (:meth:`~StepCoefficients.assign_iterate`);
* the adjoint contracts their sensitivities with :meth:`~StepCoefficients.values`
  (reverse mode, differentiable in :math:`\theta` and :math:`u^n`);
* the Gauss--Newton tangent differentiates the same :meth:`~StepCoefficients.values` forward
  in :math:`\theta` (``torch.func.jacfwd``), with a discrete gradient written for that.

No other module samples the networks at the points of a step.
"""

from __future__ import annotations

from collections.abc import Callable

import firedrake as fd
import torch

from femeso.stepping.discrete_gradients import (
    DEFAULT_TOL,
    discrete_gradient,
    discrete_gradient_and_jacobian,
    scalar_discrete_gradient,
)

__all__ = ["StepCoefficients"]

#: ``(density, u0, u1, x) -> (n, k)`` discrete gradient, differentiable as the caller needs.
DiscreteGradient = Callable[..., torch.Tensor]


class StepCoefficients:
    """The pointwise coefficients of one step of a model, with their quadrature functions.

    Parameters
    ----------
    model
        The :class:`~femeso.model.OnsagerModel`.
    midpoint_mobility
        Evaluate state-dependent mobilities at the midpoint :math:`(u^n + u^{n+1})/2` (the
        ``"midpoint"`` scheme) rather than at :math:`u^n` (``"linearised"``).

    Attributes
    ----------
    dg, kappa
        Per state component: the discrete gradient of the density and the gradient coefficient.
    mobility
        Per mobility kind (the parts' ``kind``, e.g. ``"local"``, ``"conserved"``), per
        component: the summed coefficient of the parts of that kind.
    mobility_parts
        Per kind, the class of those parts: it owns their bilinear form (``form``).
    tensor_mobility
        The summed mobility tensor, or ``None``.
    conservative
        One coefficient per conservative part of the model, in the model's order.
    lin, dg_slope, mobility_slope
        What the Jacobian's linearisation needs: the iterate :math:`u^{n+1}` at the points, and
        the slopes of the discrete gradient and of midpoint mobilities in :math:`u^{n+1}`.
    u0, u1
        The two states at the points, ``(n, k)`` tensors, of the values last assigned.

    """

    def __init__(self, model, *, midpoint_mobility: bool) -> None:
        self.model = model
        rule, k = model.rule, model.n_states
        self.k = k
        self.dg = [rule.function(name=f"dg{i}") for i in range(k)]
        self.kappa = [rule.function(name=f"kappa{i}") for i in range(k)]
        pointwise = [m for m in model.mobilities if m.kind != "tensor"]
        self.mobility_parts = {m.kind: type(m) for m in pointwise}
        kinds = sorted(self.mobility_parts)
        self.state_dependent = {
            kind: any(m.coefficient.state_dependent for m in pointwise if m.kind == kind)
            for kind in kinds
        }
        #: The kinds evaluated at the midpoint: they change with every Newton iterate.
        self.at_midpoint = [
            kind for kind in kinds if midpoint_mobility and self.state_dependent[kind]
        ]
        self.mobility = {kind: [rule.function() for _ in range(k)] for kind in kinds}
        has_tensor = any(m.kind == "tensor" for m in model.mobilities)
        self.tensor_mobility = rule.function((model.dim, model.dim)) if has_tensor else None
        self.conservative = [rule.function(w.value_shape) for w in model.conservative]
        self.lin = [rule.function() for _ in range(k)]
        self.dg_slope = [[rule.function() for _ in range(k)] for _ in range(k)]
        self.mobility_slope = {
            kind: [[rule.function() for _ in range(k)] for _ in range(k)]
            for kind in self.at_midpoint
        }
        self.u0: torch.Tensor | None = None
        self.u1: torch.Tensor | None = None
        self._F0: torch.Tensor | None = None

    # ------------------------------------------------------------------ definitions
    def targets(self, *, kappa: bool = True) -> list[fd.Function]:
        """Return the coefficients' quadrature functions, in the order of :meth:`values`."""
        out = list(self.dg) + (list(self.kappa) if kappa else [])
        for kind in self.mobility:
            out.extend(self.mobility[kind])
        if self.tensor_mobility is not None:
            out.append(self.tensor_mobility)
        return out + list(self.conservative)

    def values(
        self,
        u0: torch.Tensor,
        u1: torch.Tensor,
        *,
        kappa: bool = True,
        discrete_gradient: DiscreteGradient = discrete_gradient,
    ) -> list[torch.Tensor]:
        r"""Return the coefficients at the points for the states ``u0`` and ``u1``.

        The values are differentiable in the model's parameters and in ``u0`` (and ``u1``),
        through whatever ``discrete_gradient`` supports: the default
        (:func:`~femeso.stepping.discrete_gradients.discrete_gradient`) by reverse mode;
        :func:`~femeso.stepping.discrete_gradients.traceable_scalar_discrete_gradient` under
        ``torch.func`` transforms.

        Parameters
        ----------
        u0, u1
            ``(n, k)`` states at the quadrature points.
        kappa
            Include the gradient coefficients (they depend on :math:`\theta` only).
        discrete_gradient
            How the discrete gradient of the density is computed.

        Returns
        -------
        list of torch.Tensor
            One tensor per function of :meth:`targets`, shaped like its values at the points.

        """
        model, x = self.model, self.model.x
        dg = discrete_gradient(model.energy.density, u0, u1, x, tol=DEFAULT_TOL)
        out = [dg[:, i] for i in range(self.k)]
        if kappa:
            values = model.kappa()
            out.extend(values[:, i] for i in range(self.k))
        if self.mobility:
            mobility = self._mobility(u0, u1)
            for kind in self.mobility:
                out.extend(mobility[kind][:, i] for i in range(self.k))
        if self.tensor_mobility is not None:
            out.append(model.tensor_mobility_values())
        out.extend(w.point_values(x) for w in model.conservative)
        return out

    def _mobility(self, u0: torch.Tensor, u1: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the mobility coefficients by kind, each at the state its scheme uses."""
        model = self.model
        frozen = [kind for kind in self.mobility if kind not in self.at_midpoint]
        values = model.mobility_values(u0) if frozen else {}
        if self.at_midpoint:
            midpoint = model.mobility_values(0.5 * (u0 + u1))
            values.update({kind: midpoint[kind] for kind in self.at_midpoint})
        return values

    # ------------------------------------------------------------------ the stepper's values
    def assign_fixed(self, u0: torch.Tensor, F0: torch.Tensor) -> None:
        """Write what stays fixed during a step from ``u0``: kappa, W, M(x), mobilities at u0."""
        model, rule = self.model, self.model.rule
        self.u0, self._F0, self.u1 = u0, F0, None
        with torch.no_grad():
            kappa = model.kappa()
            for i in range(self.k):
                rule.assign(self.kappa[i], kappa[:, i])
            for w, target in zip(model.conservative, self.conservative, strict=True):
                rule.assign(target, w.point_values(model.x))
            if self.tensor_mobility is not None:
                rule.assign(self.tensor_mobility, model.tensor_mobility_values())
            frozen = [kind for kind in self.mobility if kind not in self.at_midpoint]
            if frozen:
                values = model.mobility_values(u0)
                for kind in frozen:
                    for i in range(self.k):
                        rule.assign(self.mobility[kind][i], values[kind][:, i])

    def assign_iterate(self, u1: torch.Tensor) -> None:
        """Write what changes with the Newton iterate ``u1``.

        That is the discrete gradient and the midpoint mobilities, with their slopes in ``u1``
        (the exact Jacobian's linearisation).
        """
        model, rule, k = self.model, self.model.rule, self.k
        self.u1 = u1
        density, x = model.energy.density, model.x
        if k == 1:  # closed-form derivatives, no reverse-mode differentiation
            values, slope = scalar_discrete_gradient(density, self.u0, u1, x, F0=self._F0)
            jac = slope[:, :, None]
        else:
            values, jac = discrete_gradient_and_jacobian(density, self.u0, u1, x, F0=self._F0)
        for i in range(k):
            rule.assign(self.dg[i], values[:, i])
            rule.assign(self.lin[i], u1[:, i])
            for j in range(k):
                rule.assign(self.dg_slope[i][j], jac[:, i, j])
        if self.at_midpoint:
            u1_var = u1.clone().requires_grad_(True)
            with torch.enable_grad():
                m = model.mobility_values(0.5 * (self.u0 + u1_var))
                for kind in self.at_midpoint:
                    for i in range(k):
                        (row,) = torch.autograd.grad(m[kind][:, i].sum(), u1_var, retain_graph=True)
                        rule.assign(self.mobility[kind][i], m[kind][:, i])
                        for j in range(k):
                            rule.assign(self.mobility_slope[kind][i][j], row[:, j])
