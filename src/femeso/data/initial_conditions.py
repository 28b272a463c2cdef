"""Random smooth initial states on any mesh (not only sine sums on boxes)."""

from __future__ import annotations

import firedrake as fd
import numpy as np
import ufl
from mpi4py import MPI

from femeso.meshes import bounding_box

__all__ = ["random_smooth_field"]


def random_smooth_field(
    space: fd.FunctionSpace,
    *,
    seed: int,
    n_modes: int = 6,
    max_wavenumber: float = 4.0,
    amplitude: float = 1.0,
    mean: float = 0.0,
) -> fd.Function:
    r"""Return a random smooth field: a sum of plane waves with random directions, scaled.

    .. math:: u(x) = m + A \frac{\sum_j a_j \cos(2\pi k_j\cdot x/L + \phi_j)}{\max|\cdot|}

    with ``L`` the mesh's bounding-box size, wave vectors up to ``max_wavenumber``, and the sum
    rescaled so that its largest nodal value is ``amplitude`` (per component for vector spaces).
    Deterministic in ``seed`` and independent of the number of MPI processes.

    Parameters
    ----------
    space
        Scalar or vector CG space.
    seed
        Random seed.
    n_modes, max_wavenumber
        Number of plane waves and their largest wavenumber (in units of the domain size).
    amplitude, mean
        Scale and offset of the result.

    """
    mesh = space.mesh()
    x = ufl.SpatialCoordinate(mesh)
    dim = mesh.geometric_dimension
    comm = mesh.comm
    lo, hi = bounding_box(mesh)
    size = np.maximum(hi - lo, 1e-12)
    # On periodic meshes (discontinuous coordinate field) only whole wavenumbers are periodic.
    periodic = "Discontinuous" in mesh.coordinates.function_space().ufl_element().family()
    rng = np.random.default_rng(seed)
    shape = space.value_shape
    n_comp = 1 if shape == () else shape[0]
    comps = []
    for _ in range(n_comp):
        expr = 0
        for _ in range(n_modes):
            k = rng.uniform(-max_wavenumber, max_wavenumber, size=dim)
            if periodic:
                k = np.round(k) + (np.round(k) == 0) * np.sign(k + 1e-300)
            phase = rng.uniform(0, 2 * np.pi)
            a = rng.uniform(0.2, 1.0)
            arg = sum(
                2 * np.pi * float(k[i]) * (x[i] - float(lo[i])) / float(size[i]) for i in range(dim)
            )
            expr = expr + a * ufl.cos(arg + phase)
        comps.append(expr)
    raw = fd.Function(space).interpolate(comps[0] if n_comp == 1 else ufl.as_vector(comps))
    data = raw.dat.data_ro.reshape(-1, n_comp)
    peak = np.empty(n_comp)
    comm.Allreduce(np.abs(data).max(axis=0) if len(data) else np.zeros(n_comp), peak, op=MPI.MAX)
    scaled = data / np.maximum(peak, 1e-300) * amplitude + mean
    raw.dat.data_wo[...] = scaled.reshape(raw.dat.data_wo.shape)
    return raw
