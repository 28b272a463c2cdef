"""Training keeps no per-iteration objects: live Functions and solvers do not grow (issue 19).

Structural checks only (no timings, no memory figures): ``bench/train_cost.py`` measures the
resident memory per iteration.
"""

import gc
import math

import firedrake as fd
import firedrake.variational_solver as variational_solver

import femeso
from femeso.data.generators import allen_cahn_model, generate_dataset
from femeso.training.trainer import Trainer, TrainingConfig


def allen_cahn_data():
    mesh = fd.PeriodicIntervalMesh(32, 2 * math.pi)
    V = fd.FunctionSpace(mesh, "CG", 1)
    return generate_dataset(
        V,
        lambda space: allen_cahn_model(space, epsilon=1.0),
        n_trajectories=2,
        n_frames=5,
        frame_dt=0.05,
        seed=0,
        substeps=2,
        progress=False,
        initial_condition=lambda V, seed: femeso.random_smooth_field(V, seed=seed, amplitude=1.2),
    )


def neural_trainer(iterations: int) -> Trainer:
    data = allen_cahn_data()
    energy = femeso.Energy(femeso.CoerciveNeuralDensity(width=8, seed=0), kappa=1.0)
    model = femeso.OnsagerModel(data.space, energy, mobility=femeso.LocalMobility(1.0))
    config = TrainingConfig(
        iterations=iterations, batch_size=3, unroll=2, validate_every=0, checkpoint_every=0
    )
    return Trainer(model, data, config=config, progress=False)


def live(kind: type) -> int:
    return sum(isinstance(o, kind) for o in gc.get_objects())


def test_live_functions_and_solvers_do_not_grow_over_iterations(monkeypatch):
    trainer = neural_trainer(iterations=12)
    assert trainer.collect_garbage
    built = []
    original = variational_solver.NonlinearVariationalSolver.__init__

    def counting_init(self, *args, **kwargs):
        built.append(trainer.iteration)
        original(self, *args, **kwargs)

    monkeypatch.setattr(variational_solver.NonlinearVariationalSolver, "__init__", counting_init)
    counts: dict[int, tuple[int, int]] = {}
    step = trainer.step

    def counted_step():
        # at the start of an iteration: after the previous one and the trainer's collection
        counts[trainer.iteration] = (live(fd.Function), live(fd.Cofunction))
        return step()

    trainer.step = counted_step
    trainer.run()
    assert trainer.iteration == 12
    # the stepper and its solvers are built in the first iteration, never again: a reset
    # reuses the projection that starts Newton's mu (it built a solver per window before)
    assert built and set(built) == {0}
    # Firedrake functions left by an iteration (state copies, adjoint vectors) do not pile up
    assert counts[11] == counts[3], counts


def test_reset_reuses_the_initial_mu_projection():
    data = allen_cahn_data()
    energy = femeso.Energy(femeso.CoerciveNeuralDensity(width=8, seed=0), kappa=1.0)
    model = femeso.OnsagerModel(data.space, energy, mobility=femeso.LocalMobility(1.0))
    states = data.trajectories[0].states
    stepper = femeso.EnergyStableStepper(model, states[0], 0.05)
    projection = stepper._mu_projection
    mu_first = stepper.mu.copy(deepcopy=True)
    stepper.reset(states[2])
    stepper.reset(states[0])
    assert stepper._mu_projection is projection
    # the same projection as a fresh stepper's (the factorised mass matrix is reused)
    fresh = femeso.EnergyStableStepper(model, states[0], 0.05)
    assert abs(fd.norm(stepper.mu - mu_first)) < 1e-12 * fd.norm(mu_first)
    assert abs(fd.norm(fresh.mu - mu_first)) < 1e-12 * fd.norm(mu_first)
