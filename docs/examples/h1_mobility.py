r"""A new mobility in one file: the :math:`H^1` mobility.

.. math:: a_M(u; \mu, v) = \big(m(u, x)\,\nabla\mu, \nabla v\big) + \big(m(u, x)\,\mu, v\big)

is a dissipative operator -- :math:`a_M(u; \mu, \mu) = \int m\,(|\nabla\mu|^2 + \mu^2) \ge 0`
for :math:`m \ge 0` -- that mixes Cahn--Hilliard (conserved) and Allen--Cahn (local) relaxation
with one coefficient. It does not conserve mass.

A mobility part of femeso is a :class:`~femeso.model.mobilities.PointwiseMobility` (its coefficient
:math:`m \ge 0` -- a constant, a :class:`~femeso.NeuralField` through a softplus, or a known
expression -- and its evaluation at the quadrature points come with the base class) plus what
this file writes: a ``kind`` (parts of one kind share one coefficient function in the stepper),
whether it conserves mass, and its bilinear form for one state component. The stepper, the
discrete adjoint, the Gauss--Newton tangent (Levenberg--Marquardt) and the plain-UFL weak form
all take the form from here; nothing else in femeso changes. ``tests/test_extending.py`` runs
this part through stepping (the energy law), the adjoint and Levenberg--Marquardt.

Usage::

    from h1_mobility import H1Mobility
    model = femeso.OnsagerModel(V, energy, mobility=H1Mobility(femeso.NeuralField(1, 1)))
"""

from __future__ import annotations

from typing import Any

import ufl

from femeso.model.mobilities import PointwiseMobility


class H1Mobility(PointwiseMobility):
    """``a_M(u; mu, v) = (m grad mu, grad v) + (m mu, v)`` with ``m(u, x) >= 0``."""

    kind = "h1"
    conserves_mass = False

    @staticmethod
    def form(m: Any, mu: Any, v: Any, dx: Any) -> Any:
        """Return the bilinear form of one state component with coefficient ``m``."""
        return m * (ufl.inner(ufl.grad(mu), ufl.grad(v)) + mu * v) * dx
