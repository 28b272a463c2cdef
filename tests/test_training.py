"""Training: unrolled adjoint gradients, checkpoints and exact resume, validation, MPI."""

import json
import math

import firedrake as fd
import numpy as np
import pytest
import torch

import femeso
from femeso.data.generators import allen_cahn_model, generate_dataset
from femeso.training.trainer import (
    Trainer,
    TrainingConfig,
    fit,
    one_step_pairs,
    window_loss_and_gradient,
)


def allen_cahn_data(comm=fd.COMM_WORLD, n_trajectories=2, n_frames=5):
    mesh = fd.PeriodicIntervalMesh(48, 2 * math.pi, comm=comm)
    V = fd.FunctionSpace(mesh, "CG", 1)
    return generate_dataset(
        V,
        lambda space: allen_cahn_model(space, epsilon=1.0),
        n_trajectories=n_trajectories,
        n_frames=n_frames,
        frame_dt=0.05,
        seed=0,
        substeps=2,
        progress=False,
        initial_condition=lambda V, seed: femeso.random_smooth_field(V, seed=seed, amplitude=1.2),
    )


def neural_model(V, seed=0):
    energy = femeso.Energy(femeso.CoerciveNeuralDensity(width=8, seed=seed), kappa=1.0)
    return femeso.OnsagerModel(V, energy, mobility=femeso.LocalMobility(1.0))


def flat_grad(model):
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in model.parameters()
        ]
    )


def test_fit_lowers_the_one_step_loss_on_allen_cahn_data():
    data = allen_cahn_data(n_frames=4)
    assert len(one_step_pairs(data)) == 8
    model = neural_model(data.space)
    history = fit(
        model,
        data,
        epochs=15,
        batch_size=4,
        progress=False,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.05),
    )
    assert history[-1] < 0.3 * history[0], history


def test_unrolled_training_lowers_the_loss():
    data = allen_cahn_data()
    model = neural_model(data.space)
    config = TrainingConfig(
        iterations=12, batch_size=2, unroll=3, learning_rate=0.05, lr_decay=1.0, validate_every=0
    )
    history = Trainer(model, data, config=config, progress=False).run()
    assert np.mean(history.losses[-3:]) < 0.2 * history.losses[0], history.losses


@pytest.mark.parametrize("optimizer", ["adam", "levenberg_marquardt"])
def test_every_optimiser_step_keeps_the_input_slopes_bounded(optimizer):
    data = allen_cahn_data()
    model = neural_model(data.space)
    first = model.energy.density.network.layers[0].weight
    with torch.no_grad():
        first.mul_(10.0)  # start above the bound: the first step must project
    bound = 0.5 * float(first.detach().abs().max())
    config = TrainingConfig(
        iterations=3,
        batch_size=2,
        learning_rate=0.05 if optimizer == "adam" else 1.0,
        optimizer=optimizer,
        validate_every=0,
        max_input_slope=bound,
    )
    trainer = Trainer(model, data, config=config, progress=False)
    for _ in range(3):  # one step of lr 0.05 cannot halve the weights: the projection must
        trainer.step()
        assert float(first.detach().abs().max()) <= bound


@pytest.mark.parametrize("optimizer", ["adam", "levenberg_marquardt"])
def test_an_iteration_whose_windows_all_fail_is_skipped_with_the_parameters_unchanged(optimizer):
    data = allen_cahn_data()
    model = neural_model(data.space)
    config = TrainingConfig(
        iterations=2, batch_size=2, optimizer=optimizer, learning_rate=0.05, validate_every=0
    )

    def failing(u0, dt):  # Newton may not iterate: every step fails, also after halvings
        return femeso.EnergyStableStepper(
            model, u0, dt, max_halvings=1, solver_parameters={"snes_max_it": 0}
        )

    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    trainer = Trainer(model, data, config=config, make_stepper=failing, progress=False)
    history = trainer.run()
    assert [r.skipped for r in history.records] == [2, 2]
    assert all(math.isnan(r.loss) for r in history.records)
    after = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    assert torch.equal(before, after)


@pytest.mark.parametrize("optimizer", ["adam", "levenberg_marquardt"])
def test_after_a_failed_minibatch_training_returns_to_the_best_validated_parameters(optimizer):
    """A step into parameters that cannot step any window is undone, not kept forever."""
    data = allen_cahn_data(n_trajectories=2, n_frames=4)
    model = neural_model(data.space)
    config = TrainingConfig(
        iterations=4, batch_size=2, optimizer=optimizer, learning_rate=0.05, validate_every=1
    )
    raw_a = model.energy.density.raw_a

    class Tripwire(femeso.EnergyStableStepper):
        """Fails every step while raw_a is beyond 50 (parameters no window can step)."""

        def advance(self):
            if float(raw_a.detach()) > 50:
                raise femeso.stepping.energy_stable.StepFailure("tripwire")
            return super().advance()

    trainer = Trainer(
        model,
        data,
        data,
        config=config,
        make_stepper=lambda u0, dt: Tripwire(model, u0, dt),
        progress=False,
    )
    trainer.step()  # a normal iteration, validated: the best parameters so far
    best = {k: v.clone() for k, v in model.state_dict().items()}
    assert trainer.history.best_iteration == 1
    with torch.no_grad():
        raw_a.fill_(100.0)  # as if an accepted step had left the region that steps
    damping = trainer.optimizer.damping if optimizer == "levenberg_marquardt" else None
    record = trainer.step()
    assert record.skipped == 2 and math.isnan(record.loss)
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[key]), key
    if damping is not None:
        increase = trainer.optimizer.param_groups[0]["increase"]
        assert trainer.optimizer.damping == pytest.approx(damping * increase) != damping
    record = trainer.step()  # training goes on from there
    assert record.skipped == 0 and math.isfinite(record.loss)


def test_checkpoint_stride_gives_the_same_gradient_as_storing_every_state():
    data = allen_cahn_data(n_trajectories=1, n_frames=7)
    model = neural_model(data.space, seed=3)
    window = data.trajectories[0].states
    stepper = femeso.EnergyStableStepper(model, window[0], 0.05)
    grads = {}
    for stride in (1, 2, 4):
        model.zero_grad()
        loss, clean = window_loss_and_gradient(stepper, window, checkpoint_stride=stride)
        assert clean
        grads[stride] = flat_grad(model).clone()
    assert float(grads[1].abs().max()) > 0
    for stride in (2, 4):
        assert torch.allclose(grads[stride], grads[1], rtol=1e-9, atol=1e-14), stride


def test_cut_gradient_differs_from_the_full_gradient_and_equals_per_step_sums():
    """'cut' is the paper's protocol: sum of one-step gradients from the model's own states."""
    data = allen_cahn_data(n_trajectories=1, n_frames=2)
    model = neural_model(data.space, seed=4)
    window = data.trajectories[0].states
    stepper = femeso.EnergyStableStepper(model, window[0], 0.05)
    model.zero_grad()
    window_loss_and_gradient(stepper, window, gradient="full")
    full = flat_grad(model).clone()
    model.zero_grad()
    window_loss_and_gradient(stepper, window, gradient="cut")
    cut = flat_grad(model).clone()
    assert float((full - cut).norm()) > 1e-6 * float(full.norm())
    # the cut gradient of step 2 alone is a one-step gradient from the model's state u_1
    stepper.reset(window[0])
    stepper.advance()
    u1 = stepper.u.copy(deepcopy=True)
    model.zero_grad()
    window_loss_and_gradient(stepper, [window[0], window[1]], weight=0.5)
    first = flat_grad(model).clone()
    model.zero_grad()
    window_loss_and_gradient(stepper, [u1, window[2]], weight=0.5)
    second = flat_grad(model).clone()
    assert torch.allclose(cut, first + second, rtol=1e-9, atol=1e-14)


def test_resume_continues_exactly(tmp_path):
    data = allen_cahn_data()
    # a constant learning rate: with a decay the schedule depends on the total iterations
    config = dict(
        batch_size=2,
        unroll=2,
        learning_rate=0.05,
        lr_decay=1.0,
        validate_every=2,
        checkpoint_every=3,
    )
    straight = neural_model(data.space)
    reference = Trainer(
        straight, data, data, TrainingConfig(iterations=6, **config), progress=False
    ).run()
    first = neural_model(data.space)
    Trainer(
        first,
        data,
        data,
        TrainingConfig(iterations=3, **config),
        directory=tmp_path,
        progress=False,
    ).run()
    resumed_model = neural_model(data.space, seed=99)  # other initial values: all overwritten
    trainer = Trainer(
        resumed_model,
        data,
        data,
        TrainingConfig(iterations=6, **config),
        directory=tmp_path,
        progress=False,
    )
    assert trainer.resumed_iteration == 0
    resumed = trainer.run(resume=True)
    assert trainer.resumed_iteration == 3  # the first 3 records (and their seconds) came before
    assert resumed.losses == reference.losses
    assert resumed.best_iteration == reference.best_iteration
    for a, b in zip(straight.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert len(saved["records"]) == 6
    assert (tmp_path / "best_model.npz").exists()


class Interrupting:
    """A stepper factory whose steppers raise KeyboardInterrupt at the n-th step overall."""

    def __init__(self, model, n):
        self.model, self.n, self.count = model, n, 0

    def __call__(self, u0, dt):
        stepper = femeso.EnergyStableStepper(self.model, u0, dt)
        advance = stepper.advance

        def counted():
            self.count += 1
            if self.count == self.n:
                raise KeyboardInterrupt
            return advance()

        stepper.advance = counted
        return stepper


def test_a_crash_keeps_the_last_completed_iteration_and_resumes_exactly(tmp_path):
    data = allen_cahn_data()
    config = TrainingConfig(
        iterations=5,
        batch_size=2,
        unroll=2,
        learning_rate=0.05,
        validate_every=0,
        checkpoint_every=0,
    )
    straight = neural_model(data.space)
    reference = Trainer(straight, data, config=config, progress=False).run()
    model = neural_model(data.space)
    crashing = Trainer(
        model,
        data,
        config=config,
        directory=tmp_path,
        progress=False,
        make_stepper=Interrupting(model, n=15),  # 4 steps per iteration: dies in iteration 4
    )
    with pytest.raises(KeyboardInterrupt):
        crashing.run()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 3
    resumed_model = neural_model(data.space, seed=5)
    resumed = Trainer(resumed_model, data, config=config, directory=tmp_path, progress=False).run(
        resume=True
    )
    assert resumed.losses == reference.losses
    for a, b in zip(straight.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    data = allen_cahn_data(n_trajectories=1, n_frames=3)
    base = dict(iterations=1, batch_size=1, validate_every=0)
    Trainer(
        neural_model(data.space),
        data,
        config=TrainingConfig(**base),
        directory=tmp_path,
        progress=False,
    ).run()
    other = Trainer(
        neural_model(data.space),
        data,
        config=TrainingConfig(**base, learning_rate=0.5),
        directory=tmp_path,
        progress=False,
    )
    with pytest.raises(ValueError, match="other settings.*learning_rate"):
        other.run(resume=True)


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"iterations": 0}, "iterations must be an integer >= 1"),
        ({"unroll": 1.5}, "unroll must be an integer"),
        ({"norm": "L1"}, "norm must be one of"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"learning_rate": -1.0}, "learning_rate must be a number > 0"),
        ({"gradient": "truncated"}, "gradient must be one of"),
        ({"max_input_slope": -1.0}, "max_input_slope must be a number >= 0"),
    ],
)
def test_bad_training_settings_are_rejected(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**settings)


def test_trainer_rejects_data_without_windows():
    data = allen_cahn_data(n_trajectories=1, n_frames=2)
    with pytest.raises(ValueError, match="no window of 3 uniform step"):
        Trainer(neural_model(data.space), data, config=TrainingConfig(unroll=3), progress=False)


def test_fit_rejects_bad_arguments():
    data = allen_cahn_data(n_trajectories=1, n_frames=2)
    with pytest.raises(ValueError, match="epochs >= 1"):
        fit(neural_model(data.space), data, epochs=0)


def parallel_and_serial_histories(config: TrainingConfig):
    """Train the same problem distributed over all ranks and serially on each rank."""
    histories = []
    for comm in (fd.COMM_WORLD, fd.COMM_SELF):
        data = allen_cahn_data(comm=comm)
        model = neural_model(data.space)
        histories.append(Trainer(model, data, data, config=config, progress=False).run())
    return histories


@pytest.mark.parallel(nprocs=2)
def test_parallel_training_gives_the_serial_loss_history():
    """The distributed run and a serial run of the same problem on each rank agree."""
    config = TrainingConfig(
        iterations=4, batch_size=2, unroll=2, learning_rate=0.05, validate_every=2
    )
    parallel, serial = parallel_and_serial_histories(config)
    np.testing.assert_allclose(parallel.losses, serial.losses, rtol=1e-8)
    np.testing.assert_allclose(parallel.best_validation, serial.best_validation, rtol=1e-8)


@pytest.mark.parallel(nprocs=2)
def test_parallel_levenberg_marquardt_gives_the_serial_loss_history():
    """Gauss-Newton matrices and gradients are summed over ranks: the same losses as serial.

    (Parameters are not compared: directions in which H is singular do not change the loss,
    and the damped step along them is set by rounding.)
    """
    config = TrainingConfig(
        iterations=3,
        batch_size=3,
        optimizer="levenberg_marquardt",
        learning_rate=1.0,
        validate_every=3,
        validation_windows=8,
    )
    parallel, serial = parallel_and_serial_histories(config)
    assert serial.losses[-1] < serial.losses[0]
    np.testing.assert_allclose(parallel.losses, serial.losses, rtol=1e-8)
    # the loss at the final parameters, on the validation windows
    np.testing.assert_allclose(parallel.best_validation, serial.best_validation, rtol=1e-8)
