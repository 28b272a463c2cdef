"""First learning test: one-step adjoint gradients fit a neural density to Allen-Cahn data."""

import math

import firedrake as fd
import pytest

import femeso
from femeso.data.generators import allen_cahn_model, generate_dataset
from femeso.training import fit, one_step_pairs


def test_fit_lowers_the_one_step_loss_on_allen_cahn_data():
    mesh = fd.PeriodicIntervalMesh(48, 2 * math.pi)
    V = fd.FunctionSpace(mesh, "CG", 1)
    data = generate_dataset(
        V,
        lambda space: allen_cahn_model(space, epsilon=1.0),
        n_trajectories=2,
        n_frames=4,
        frame_dt=0.05,
        seed=0,
        substeps=2,
        progress=False,
        initial_condition=lambda V, seed: femeso.random_smooth_field(V, seed=seed, amplitude=1.2),
    )
    assert len(one_step_pairs(data)) == 8
    energy = femeso.Energy(femeso.CoerciveNeuralDensity(width=8, seed=0), kappa=1.0)
    model = femeso.OnsagerModel(V, energy, mobility=femeso.LocalMobility(1.0))
    history = fit(
        model,
        data,
        epochs=15,
        batch_size=4,
        progress=False,
        optimizer=__import__("torch").optim.Adam(model.parameters(), lr=0.05),
    )
    assert history[-1] < 0.3 * history[0], history


def test_fit_rejects_bad_arguments():
    mesh = fd.PeriodicIntervalMesh(8, 1.0)
    V = fd.FunctionSpace(mesh, "CG", 1)
    model = femeso.OnsagerModel(
        V, femeso.Energy(femeso.CoerciveNeuralDensity()), mobility=femeso.LocalMobility(1.0)
    )
    data = generate_dataset(
        V, allen_cahn_model, n_trajectories=1, n_frames=1, frame_dt=1e-3, seed=0, progress=False
    )
    with pytest.raises(ValueError, match="epochs >= 1"):
        fit(model, data, epochs=0)
