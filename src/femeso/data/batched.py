r"""Batched reference generation: several trajectories of one equation solved as one system.

On small meshes a step of :class:`~femeso.stepping.energy_stable.EnergyStableStepper` costs
Python and PETSc overhead (form assembly calls, callbacks, the SNES set-up), not arithmetic: the
paper's 1-D Allen--Cahn mesh has 256 cells. :class:`BatchedReference` therefore solves ``B``
trajectories at once on ``B`` *disjoint copies* of the mesh held as one Firedrake mesh
(:func:`mesh_copies`): the same model (``model_factory`` on P1 of the copies), the same UFL
weak form, the same stepper, scheme, quadrature rule and Newton tolerances (on 1-D meshes the
direct solver inside Newton is PETSc's LU, :data:`LU_1D`). Nothing couples the
copies (no cell, facet or degree of freedom is shared, and every term of a local model is an
integral over cells), so each copy's unknowns satisfy its own trajectory's discrete equations;
one Newton solve per step serves ``B`` trajectories, and its Jacobian is block diagonal.

What stays global, and how it is kept exact:

* Newton's stopping test uses the norm of the whole residual, so a batched state agrees with the
  one-at-a-time state to the nonlinear solver's tolerance (measured: ``tests/
  test_batched_generation.py``), not bit for bit.
* The step controller halves a step for the whole batch: a batch in which any step needed a
  halving (or failed) is not what one-at-a-time generation computes for its other members, so
  :meth:`BatchedReference.run` raises :class:`NotInLockstep` and the caller generates those
  trajectories one at a time (logged).
* Energies are reported per copy: the same quadrature sums as ``OnsagerModel.energy_parts``,
  split by the copy each quadrature point belongs to.

Batching applies to serial runs, simplex meshes with a coordinate field of degree 1, P1 (vertex)
state spaces and models whose forms are cell integrals without a nonlocal energy part; elsewhere
:func:`batching_obstacle` and :attr:`BatchedReference.obstacle` say in words why not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import firedrake as fd
import numpy as np
import torch
import ufl

from femeso._log import logger
from femeso.model.onsager import OnsagerModel
from femeso.stepping.energy_stable import EnergyStableStepper, StepFailure

__all__ = [
    "LU_1D",
    "BatchedReference",
    "MeshCopies",
    "NotInLockstep",
    "batch_sizes",
    "batching_obstacle",
    "mesh_copies",
]

#: The Jacobian's LU on 1-D meshes: PETSc's own sparse LU, nested-dissection ordering, merged
#: over the stepper's default (MUMPS). The copies' Jacobian is block diagonal with banded blocks;
#: MUMPS spent 19 ms per factorisation of 32 copies of the paper's 256-cell interval (7 Mflop),
#: PETSc's LU 1.4 ms, and 40 batched steps took 1.9 s instead of 4.9 s. On 2-D meshes MUMPS was
#: as fast or faster (32 x 32 square: 35 ms against 42 ms a step) and stays.
LU_1D: dict = {"pc_factor_mat_solver_type": "petsc", "pc_factor_mat_ordering_type": "nd"}

#: Relative tolerance of the check that every copy reproduces the mesh (P1 loads of a
#: position-dependent function, copy by copy, against the mesh's own).
_COPY_CHECK_RTOL = 1e-12


class NotInLockstep(RuntimeError):
    """A batched step needed a halving or failed: the batch is not one-at-a-time generation."""


def batching_obstacle(space: fd.FunctionSpace) -> str | None:
    """Return why trajectories on ``space`` cannot be batched, in words, or ``None``.

    Parameters
    ----------
    space
        The space of the reference solve.

    """
    mesh = space.mesh()
    if mesh.comm.size > 1:
        return f"batched generation runs on one process (this run has {mesh.comm.size})"
    cell = mesh.ufl_cell()
    if not cell.is_simplex:
        return f"batched generation needs a simplex mesh (this one has {cell.cellname} cells)"
    coordinates = mesh.coordinates.function_space()
    if coordinates.ufl_element().embedded_superdegree != 1:
        return "batched generation needs a mesh with straight cells (coordinate degree 1)"
    dofs = space.finat_element.entity_dofs()
    vertex_only = all(len(d) == 1 for d in dofs[0].values()) and all(
        len(d) == 0 for dim, entities in dofs.items() if dim != 0 for d in entities.values()
    )
    if not vertex_only:
        return (
            f"batched generation needs a P1 state space (this one is {space.ufl_element()}); "
            "its degrees of freedom must sit at the vertices"
        )
    return None


@dataclass
class MeshCopies:
    """``copies`` disjoint copies of a mesh, held as one Firedrake mesh.

    Attributes
    ----------
    single
        The mesh that was copied.
    mesh
        The copies: cells ``c`` of copy ``b`` are the cells of ``single``, at the same place.
    copies
        Their number ``B``.
    cell_copy
        The copy of each cell of :attr:`mesh`, ``(n_cells,)``.

    The vertices of each cell (``DMPlex`` numbers less the first vertex's, in the cells' own
    order) of :attr:`single` and of :attr:`mesh` -- vertex ``b * n + v`` of :attr:`mesh` copies
    vertex ``v`` of :attr:`single` -- are kept to map degrees of freedom (:meth:`node_map`).

    """

    single: fd.MeshGeometry
    mesh: fd.MeshGeometry
    copies: int
    cell_copy: np.ndarray
    _vertices: tuple[np.ndarray, np.ndarray, int]

    def node_map(self, single_space: fd.FunctionSpace, space: fd.FunctionSpace) -> np.ndarray:
        """Return ``(B, n)`` indices: node ``i`` of ``single_space`` is node ``[b, i]`` of copy b.

        Both spaces are P1 (one node per vertex, :func:`batching_obstacle`) of :attr:`single`
        and :attr:`mesh`.
        """
        single_vertices, batch_vertices, n_vertices = self._vertices
        single_node = np.full(n_vertices, -1, dtype=np.int64)
        single_node[single_vertices] = single_space.cell_node_map().values
        batch_node = np.full(n_vertices * self.copies, -1, dtype=np.int64)
        batch_node[batch_vertices] = space.cell_node_map().values
        # node[b, single_node[v]] = batch_node[b * n_vertices + v]; -1 where a node is in no
        # cell (then check() refuses the copies)
        used = single_node >= 0
        nodes = np.full((self.copies, single_space.dof_dset.size), -1, dtype=np.int64)
        nodes[:, single_node[used]] = batch_node.reshape(self.copies, n_vertices)[:, used]
        return nodes

    def check(self, single_space: fd.FunctionSpace, space: fd.FunctionSpace) -> str | None:
        """Return ``None`` if every copy reproduces the mesh, else what differs, in words.

        Compares the loads ``int phi_i f(x) dx`` of a position-dependent ``f`` on each copy with
        those on :attr:`single`, node by node through :meth:`node_map`: a wrong cell, vertex
        order or coordinate would change them.
        """

        def loads(V: fd.FunctionSpace) -> np.ndarray:
            x = ufl.SpatialCoordinate(V.mesh())
            f = 1.0 + sum((d + 1) * x[d] + x[d] ** 2 for d in range(len(x)))
            return fd.assemble(ufl.inner(fd.TestFunction(V), f) * fd.dx).dat.data_ro.copy()

        nodes = self.node_map(single_space, space)
        if nodes.min() < 0 or len(np.unique(nodes)) != space.dof_dset.size:
            return "the mesh has vertices outside its cells, which the copies do not carry"
        single, batched = loads(single_space), loads(space)[nodes]
        error = np.abs(batched - single[None]).max() / (np.abs(single).max() + 1e-300)
        if not error <= _COPY_CHECK_RTOL:
            return f"the mesh copies do not reproduce the mesh (relative load error {error:.2e})"
        return None


def mesh_copies(mesh: fd.MeshGeometry, copies: int) -> MeshCopies:
    """Return ``copies`` disjoint copies of a (serial, simplex, straight-celled) mesh as one mesh.

    The topology is the mesh's ``DMPlex`` cell-vertex list repeated with offset vertex numbers
    (:func:`firedrake.mesh.plex_from_cell_list`), so periodic meshes stay periodic; the
    coordinate field (continuous, or discontinuous for periodic meshes) is copied cell by cell,
    so every copy lies where the mesh does.

    Parameters
    ----------
    mesh
        The mesh (see :func:`batching_obstacle` for what it must be).
    copies
        How many copies (>= 1).

    """
    if copies < 1:
        raise ValueError(f"mesh_copies needs copies >= 1, got {copies}")
    if mesh.comm.size > 1:
        raise ValueError("mesh_copies needs a mesh on one process (see batching_obstacle)")
    topology = mesh.topology
    n_corners = mesh.ufl_cell().num_vertices
    closure = topology.cell_closure  # per cell: its vertices first, the cell itself last
    v_start, v_end = topology.topology_dm.getDepthStratum(0)
    n_vertices, n_cells = v_end - v_start, closure.shape[0]
    corners = closure[:, :n_corners] - v_start  # (n_cells, n_corners), Firedrake cell order
    gdim = mesh.geometric_dimension
    X = mesh.coordinates
    cell_x = X.dat.data_ro.reshape(-1, gdim)[X.function_space().cell_node_map().values]
    # Vertex positions for the DMPlex (on periodic meshes ambiguous at the seam: the cells'
    # own coordinates, copied below, are what the copies use).
    vertex_x = np.zeros((n_vertices, gdim))
    vertex_x[corners.reshape(-1)] = cell_x.reshape(-1, gdim)
    offsets = n_vertices * np.arange(copies)
    cells = (corners[None] + offsets[:, None, None]).reshape(-1, n_corners)
    plex = fd.mesh.plex_from_cell_list(
        mesh.topological_dimension, cells, np.tile(vertex_x, (copies, 1)), mesh.comm
    )
    topology_mesh = fd.Mesh(plex, reorder=False, comm=mesh.comm)
    closure_b = topology_mesh.topology.cell_closure
    dm = topology_mesh.topology.topology_dm
    c_start, _ = dm.getHeightStratum(0)
    vb_start, _ = dm.getDepthStratum(0)
    copy, cell = np.divmod(closure_b[:, -1] - c_start, n_cells)  # row of `cells` -> (b, cell)
    corners_b = closure_b[:, :n_corners] - vb_start
    corner_copy, corner_vertex = np.divmod(corners_b, n_vertices)
    if not np.array_equal(corner_copy, np.broadcast_to(copy[:, None], corner_copy.shape)):
        raise RuntimeError("mesh_copies: a cell of one copy has a vertex of another")
    # The copies' cells may list their vertices in another order: find each one's position.
    source = corners[cell]
    position = np.argmax(source[:, None, :] == corner_vertex[:, :, None], axis=2)
    if not np.array_equal(np.take_along_axis(source, position, 1), corner_vertex):
        raise RuntimeError("mesh_copies: a copied cell does not have the mesh cell's vertices")
    coordinates = fd.Function(fd.FunctionSpace(topology_mesh, X.function_space().ufl_element()))
    nodes_b = coordinates.function_space().cell_node_map().values
    coordinates.dat.data_wo.reshape(-1, gdim)[nodes_b] = np.take_along_axis(
        cell_x[cell], position[:, :, None], 1
    )
    batch = fd.Mesh(coordinates, name=f"{mesh.name}_x{copies}")
    vertices = (closure[:, :n_corners] - v_start, corners_b, n_vertices)
    return MeshCopies(mesh, batch, copies, copy, vertices)


def batch_sizes(n: int, batch: int) -> list[int]:
    """Split ``n`` trajectories into ``ceil(n / batch)`` batches of sizes differing by <= 1.

    Two sizes at most, so at most two batched systems are built (each one is reused).
    """
    count = -(-n // max(1, batch))
    return [n // count + (1 if i < n % count else 0) for i in range(count)]


class BatchedReference:
    """``B`` trajectories of one model advanced together by one energy-stable stepper.

    Parameters
    ----------
    space
        The (scalar P1) space of one trajectory's reference solve.
    model_factory
        Builds the model on a function space (called once, on P1 of the copies).
    copies
        ``B``.
    dt
        The reference step.
    solver_parameters
        PETSc options merged over the stepper's default; ``None``: :data:`LU_1D` on 1-D meshes,
        the default elsewhere. The equations and Newton's tolerances are the stepper's either
        way: only the direct solver of each Newton step changes, and with it the rounding.

    Attributes
    ----------
    obstacle
        ``None``, or why this model cannot be batched (then :meth:`run` must not be called).

    """

    def __init__(
        self,
        space: fd.FunctionSpace,
        model_factory: Callable[[fd.FunctionSpace], OnsagerModel],
        copies: int,
        dt: float,
        solver_parameters: dict | None = None,
    ) -> None:
        self.space, self.copies, self.dt = space, copies, float(dt)
        self.obstacle: str | None = batching_obstacle(space)
        if self.obstacle is not None:
            return
        self.mesh_copies = mesh_copies(space.mesh(), copies)
        self.batch_space = fd.FunctionSpace(self.mesh_copies.mesh, space.ufl_element())
        self.obstacle = self.mesh_copies.check(space, self.batch_space)
        if self.obstacle is not None:
            logger.warning("batched generation: %s", self.obstacle)
            return
        self.nodes = self.mesh_copies.node_map(space, self.batch_space)
        self.model = model_factory(self.batch_space)
        if self.model.energy.nonlocal_part is not None:
            self.obstacle = "the model's energy has a nonlocal part (it would couple the copies)"
            return
        self._u0 = fd.Function(self.batch_space)
        if solver_parameters is None and space.mesh().topological_dimension == 1:
            solver_parameters = LU_1D
        self.stepper = EnergyStableStepper(
            self.model, self._u0, self.dt, solver_parameters=solver_parameters
        )
        kinds = {integral.integral_type() for integral in self.stepper.residual.integrals()}
        if kinds != {"cell"}:
            self.obstacle = (
                f"the model's weak form has {sorted(kinds - {'cell'})} integrals, "
                "which the mesh copies do not carry"
            )
            return
        # The copy of every quadrature point, to split the energy's quadrature sums by copy.
        rule = self.model.rule
        self._point_copy = np.empty(rule.n_points, dtype=np.int64)
        self._point_copy[rule.scalar_space.cell_node_map().values] = self.mesh_copies.cell_copy[
            :, None
        ]

    def energies(self, u: fd.Function) -> np.ndarray:
        """Return ``V_h`` of each copy of the batched state ``u``, ``(B,)``.

        The sums of ``OnsagerModel.energy_parts`` (pointwise part plus gradient part, the same
        rule), each one over the quadrature points of one copy.
        """
        model = self.model
        with torch.no_grad():
            u_q = model.state_at_points(u)
            F_q = model.density(u_q)
            kappa = model.kappa()
        grad_u = model.rule.sample(ufl.grad(u)).reshape(-1, model.n_states, model.dim)
        grad_sq = torch.as_tensor((grad_u**2).sum(axis=2), dtype=kappa.dtype)
        weights = model.rule.weights
        pointwise = (weights * F_q).numpy()
        gradient = (weights * 0.5 * (kappa * grad_sq).sum(dim=1)).numpy()
        split = lambda values: np.bincount(  # noqa: E731
            self._point_copy, weights=values, minlength=self.copies
        )
        return split(pointwise) + split(gradient)

    def run(
        self,
        initial: Sequence[fd.Function],
        n_frames: int,
        substeps: int,
        on_frame: Callable[[int, np.ndarray], None],
    ) -> np.ndarray:
        """Advance ``B`` initial states ``n_frames`` frames of ``substeps`` steps each.

        Parameters
        ----------
        initial
            ``B`` states on :attr:`space`.
        n_frames, substeps
            Saved frames after the initial one, and reference steps per frame.
        on_frame
            Called as ``on_frame(n, values)`` for the initial state (``n = 0``) and after each
            frame: ``values[b]`` are the nodal values of trajectory ``b`` on :attr:`space`
            (a fresh array).

        Returns
        -------
        numpy.ndarray
            ``(n_frames + 1, B)`` energies ``V_h`` of each trajectory at each frame.

        Raises
        ------
        NotInLockstep
            If a step needed a halving or failed: generate these trajectories one at a time.

        """
        if self.obstacle is not None:
            raise RuntimeError(f"this model cannot be batched: {self.obstacle}")
        if len(initial) != self.copies:
            raise ValueError(f"run needs {self.copies} initial states, got {len(initial)}")
        values = self._u0.dat.data_wo
        for b, u0 in enumerate(initial):
            values[self.nodes[b]] = u0.dat.data_ro
        stepper = self.stepper
        stepper.reset(self._u0)
        stepper.records = []
        energies = [self.energies(stepper.u)]
        on_frame(0, stepper.u.dat.data_ro[self.nodes])
        for n in range(1, n_frames + 1):
            for _ in range(substeps):
                try:
                    record = stepper.advance()
                except StepFailure as exc:
                    raise NotInLockstep(f"a batched step failed ({exc})") from exc
                if record.halvings:
                    raise NotInLockstep(
                        f"the batched step to t={stepper.t:.6g} needed {record.halvings} halving(s)"
                    )
            stepper.records = []
            energies.append(self.energies(stepper.u))
            on_frame(n, stepper.u.dat.data_ro[self.nodes])
        return np.array(energies)
