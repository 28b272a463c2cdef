"""The quadrature rule shared by the discrete energy and the scheme, and values living on it.

femeso evaluates every pointwise field at the quadrature points of one rule of degree ``q``
(a ``Quadrature`` finite element of that degree) and integrates every term of the weak form and
of the discrete energy ``V_h`` with ``dx(degree=q)`` -- the same points and weights. That shared
rule is the condition under which the discrete energy law holds to rounding.
"""

from __future__ import annotations

import firedrake as fd
import numpy as np
import torch
import ufl
from finat.ufl import FiniteElement, TensorElement, VectorElement
from firedrake.petsc import PETSc

from femeso.model.fields import DTYPE

__all__ = ["QuadratureRule"]


class QuadratureRule:
    """Quadrature points of a mesh, with spaces and samplers for values at those points.

    Parameters
    ----------
    mesh
        The mesh.
    degree
        Degree of the rule (polynomials of this degree are integrated exactly).

    """

    def __init__(self, mesh: fd.MeshGeometry, degree: int) -> None:
        if degree < 1:
            raise ValueError(f"quadrature degree must be >= 1, got {degree}")
        self.mesh = mesh
        self.degree = degree
        cell = mesh.ufl_cell()
        element = FiniteElement("Quadrature", cell, degree, quad_scheme="default")
        self.scalar_space = fd.FunctionSpace(mesh, element)
        self._vector_spaces: dict[int, fd.FunctionSpace] = {}
        self._tensor_spaces: dict[tuple[int, int], fd.FunctionSpace] = {}
        self._samplers: dict[tuple, fd.Matrix] = {}
        self.dx = fd.dx(domain=mesh, degree=degree, scheme="default")
        x = self.sample(fd.SpatialCoordinate(mesh))
        self.points = torch.as_tensor(x.reshape(-1, mesh.geometric_dimension).copy(), dtype=DTYPE)
        weights = fd.assemble(fd.TestFunction(self.scalar_space) * self.dx)
        self.weights = torch.as_tensor(weights.dat.data_ro.copy(), dtype=DTYPE)

    @property
    def n_points(self) -> int:
        """Number of quadrature points owned by this process."""
        return self.weights.shape[0]

    def space(self, shape: tuple[int, ...] = ()) -> fd.FunctionSpace:
        """Return the quadrature space of values of shape ``()``, ``(k,)`` or ``(k, k)``."""
        if shape == ():
            return self.scalar_space
        cell = self.mesh.ufl_cell()
        base = FiniteElement("Quadrature", cell, self.degree, quad_scheme="default")
        if len(shape) == 1:
            if shape[0] not in self._vector_spaces:
                element = VectorElement(base, dim=shape[0])
                self._vector_spaces[shape[0]] = fd.FunctionSpace(self.mesh, element)
            return self._vector_spaces[shape[0]]
        if shape not in self._tensor_spaces:
            element = TensorElement(base, shape=shape)
            self._tensor_spaces[shape] = fd.FunctionSpace(self.mesh, element)
        return self._tensor_spaces[shape]

    def function(self, shape: tuple[int, ...] = (), name: str | None = None) -> fd.Function:
        """Return a new zero function of values at the quadrature points."""
        return fd.Function(self.space(shape), name=name)

    def sample(self, expression: ufl.core.expr.Expr, out: fd.Function | None = None) -> np.ndarray:
        """Evaluate a UFL expression at the quadrature points.

        Returns an array of shape ``(n_points,) + value_shape`` (a view of ``out`` when given).
        """
        shape = expression.ufl_shape
        if out is None:
            out = self.function(shape)
        sampler = self._sampler(expression)
        if sampler is not None:
            function, matrix = sampler
            with function.dat.vec_ro as x, out.dat.vec_wo as y:
                matrix.mult(x, y)
        else:
            fd.assemble(fd.interpolate(expression, out.function_space()), tensor=out)
        return out.dat.data_ro.reshape((out.dat.data_ro.shape[0],) + shape)

    def _sampler(self, expression: ufl.core.expr.Expr) -> tuple[fd.Function, PETSc.Mat] | None:
        """Return ``(u, E)`` with ``E`` the matrix of ``u -> expression`` at the points, if linear.

        Values and gradients of a ``Function`` are linear in its degrees of freedom: one sparse
        matrix-vector product replaces an interpolation (which rebuilds its kernel arguments on
        every call, ~50x slower on small meshes). The matrix is assembled once per element.
        """
        gradient = isinstance(expression, ufl.classes.Grad)
        function = expression.ufl_operands[0] if gradient else expression
        if not isinstance(function, fd.Function) or function.ufl_element().family() not in (
            "Lagrange",
            "Q",
        ):
            return None
        key = (function.ufl_element(), gradient)
        if key not in self._samplers:
            V = fd.FunctionSpace(self.mesh, function.ufl_element())
            trial = fd.TrialFunction(V)
            target = self.space(expression.ufl_shape)
            matrix = fd.assemble(fd.interpolate(ufl.grad(trial) if gradient else trial, target))
            self._samplers[key] = matrix
        return function, self._samplers[key].petscmat

    def integrate(self, values: torch.Tensor) -> torch.Tensor:
        """Return the global integral of pointwise values ``(n_points,)`` (summed over ranks)."""
        local = (self.weights * values).sum()
        comm = self.mesh.comm
        if comm.size == 1:
            return local
        # Sum the detached local contributions; keep the local graph for autograd.
        total = comm.allreduce(float(local.detach()))
        return local + (total - local.detach())

    @staticmethod
    def assign(f: fd.Function, values: torch.Tensor | np.ndarray) -> None:
        """Write pointwise values (owned points) into a quadrature function."""
        array = values.detach().numpy() if isinstance(values, torch.Tensor) else values
        f.dat.data_wo[...] = array.reshape(f.dat.data_wo.shape)
