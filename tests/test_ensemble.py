"""Trajectory-parallel training: ensemble members share the windows and equal the serial run.

The 2-rank tests train the same problem twice on every rank: as one member of a 2-member
:class:`~femeso.training.ensemble.TrainingEnsemble` (each member one rank, half of each minibatch's
windows) and alone on ``COMM_SELF`` (all windows). The 1 x 2 split (one member of 2 spatial ranks)
is the spatial-parallel training of ``tests/test_training.py``; both splits of the ``femeso``
command are in ``tests/test_ranks.py``.
"""

import firedrake as fd
import numpy as np
import pytest
import torch

from femeso.config import ConfigError, validate
from femeso.training.ensemble import TrainingEnsemble
from femeso.training.trainer import Trainer, TrainingConfig
from test_training import allen_cahn_data, neural_model


def train_both_ways(config: TrainingConfig):
    """(ensemble run, serial run) of one problem: histories and final parameters."""
    ensemble = TrainingEnsemble.split(2)
    assert (ensemble.members, ensemble.comm.size) == (2, 1)
    runs = []
    for comm, members in ((ensemble.comm, ensemble), (fd.COMM_SELF, None)):
        data = allen_cahn_data(comm=comm, n_trajectories=3)
        model = neural_model(data.space)
        trainer = Trainer(model, data, data, config=config, progress=False, ensemble=members)
        history = trainer.run()
        vector = torch.nn.utils.parameters_to_vector(model.parameters()).detach().numpy()
        runs.append((history, vector))
    return runs


@pytest.mark.parallel(nprocs=2)
def test_ensemble_adam_training_equals_the_serial_run():
    """Odd minibatches (3 windows: 2 on member 0, 1 on member 1), unrolled windows, validation."""
    config = TrainingConfig(
        iterations=4, batch_size=3, unroll=2, learning_rate=0.05, validate_every=2
    )
    (ensemble, theta), (serial, theta_serial) = train_both_ways(config)
    assert len(ensemble.losses) == 4
    np.testing.assert_allclose(ensemble.losses, serial.losses, rtol=1e-10)
    np.testing.assert_allclose(ensemble.best_validation, serial.best_validation, rtol=1e-10)
    np.testing.assert_allclose(theta, theta_serial, rtol=1e-9, atol=1e-12)
    # every rank holds the same parameters without any broadcast
    gathered = fd.COMM_WORLD.allgather(theta)
    np.testing.assert_array_equal(gathered[0], gathered[1])


@pytest.mark.parallel(nprocs=2)
def test_ensemble_levenberg_marquardt_equals_the_serial_run():
    """Gauss-Newton matrices, gradients and trial losses summed over the members."""
    config = TrainingConfig(
        iterations=3,
        batch_size=5,
        optimizer="levenberg_marquardt",
        learning_rate=1.0,
        validate_every=3,
        validation_windows=7,
    )
    (ensemble, _), (serial, _) = train_both_ways(config)
    assert serial.losses[-1] < serial.losses[0]
    np.testing.assert_allclose(ensemble.losses, serial.losses, rtol=1e-9)
    np.testing.assert_allclose(ensemble.best_validation, serial.best_validation, rtol=1e-9)


@pytest.mark.parallel(nprocs=2)
@pytest.mark.parametrize("optimizer", ["adam", "levenberg_marquardt"])
def test_a_member_without_windows_still_takes_the_serial_step(optimizer):
    """Minibatches of 1 window: member 1 rolls out nothing and contributes zeros to the sums."""
    config = TrainingConfig(
        iterations=2,
        batch_size=1,
        optimizer=optimizer,
        learning_rate=0.05 if optimizer == "adam" else 1.0,
        validate_every=2,
        validation_windows=3,
    )
    (ensemble, theta), (serial, theta_serial) = train_both_ways(config)
    np.testing.assert_allclose(ensemble.losses, serial.losses, rtol=1e-10)
    np.testing.assert_allclose(ensemble.best_validation, serial.best_validation, rtol=1e-10)
    np.testing.assert_allclose(theta, theta_serial, rtol=1e-9, atol=1e-12)


@pytest.mark.parallel(nprocs=2)
def test_ensemble_checkpoints_are_written_once_and_resume_exactly(tmp_path):
    """World rank 0 writes; both members read the checkpoint back and continue as one run."""
    from pathlib import Path

    directory = Path(fd.COMM_WORLD.bcast(str(tmp_path) if fd.COMM_WORLD.rank == 0 else None))
    ensemble = TrainingEnsemble.split(2)
    data = allen_cahn_data(comm=ensemble.comm, n_trajectories=3)
    config = dict(
        batch_size=3, learning_rate=0.05, lr_decay=1.0, validate_every=2, checkpoint_every=2
    )

    def trainer(model, iterations, folder):
        return Trainer(
            model,
            data,
            data,
            TrainingConfig(iterations=iterations, **config),
            directory=folder,
            progress=False,
            ensemble=ensemble,
        )

    straight = neural_model(data.space)
    reference = trainer(straight, 4, None).run()
    trainer(neural_model(data.space), 2, directory).run()
    assert sorted(p.name for p in directory.iterdir()) == [
        "best_model.npz",
        "checkpoint.pt",
        "history.json",
    ]
    resumed_model = neural_model(data.space, seed=99)
    resumed = trainer(resumed_model, 4, directory).run(resume=True)
    # The first two losses are the checkpoint's, bit for bit. After the resume the new steppers
    # start Newton from other guesses: rounding-level differences, as in a serial run of these
    # settings (1.3e-15 measured; 2.4e-15 here).
    assert resumed.losses[:2] == reference.losses[:2]
    np.testing.assert_allclose(resumed.losses, reference.losses, rtol=1e-12)
    for a, b in zip(straight.parameters(), resumed_model.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parallel(nprocs=2)
def test_ensemble_sums_and_shares_cover_every_item_once():
    ensemble = TrainingEnsemble.split(2)
    items = list(range(7))
    shares = fd.COMM_WORLD.allgather(ensemble.share(items))
    assert sorted(shares[0] + shares[1]) == items
    assert shares[0] == [0, 2, 4, 6]
    total = ensemble.sum([1.0, ensemble.member])
    np.testing.assert_array_equal(total, [2.0, 1.0])
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    q = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    p.grad = torch.full((3,), 1.0 + ensemble.member, dtype=torch.float64)
    if ensemble.member == 1:  # q has a gradient on member 1 only: it counts as 0 on member 0
        q.grad = torch.ones(2, dtype=torch.float64)
    ensemble.sum_gradients([p, q])
    np.testing.assert_array_equal(p.grad.numpy(), [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(q.grad.numpy(), [1.0, 1.0])


@pytest.mark.parallel(nprocs=2)
def test_a_model_on_another_communicator_is_refused():
    ensemble = TrainingEnsemble.split(2)
    data = allen_cahn_data(comm=fd.COMM_WORLD, n_trajectories=1, n_frames=3)
    with pytest.raises(ValueError, match="spatial communicator"):
        Trainer(neural_model(data.space), data, ensemble=ensemble)


def test_an_ensemble_that_does_not_divide_the_ranks_is_one_line():
    with pytest.raises(ValueError, match=r"parallel.ensemble = 2 does not divide the 1 MPI rank"):
        TrainingEnsemble.split(2)
    one = TrainingEnsemble.split(1)
    assert (one.members, one.member, one.share([1, 2, 3])) == (1, 0, [1, 2, 3])
    assert one.describe() == "1 ensemble member x 1 spatial rank"


def test_the_ensemble_key_is_checked():
    assert validate({"parallel": {"ensemble": 4}}).parallel.ensemble == 4
    with pytest.raises(ConfigError, match="parallel.ensemble"):
        validate({"parallel": {"ensemble": 0}})
    with pytest.raises(ConfigError, match="unknown key parallel.members"):
        validate({"parallel": {"members": 2}})


@pytest.mark.parallel(nprocs=2)
def test_lines_of_femeso_child_loggers_are_written_on_rank_zero_only():
    """The warm start logs through ``femeso.training.warm_start``: under ``mpiexec -n 2`` with two
    ensemble members its lines came out twice (the rank filter sat on the parent logger only)."""
    import logging

    from femeso._log import _handler

    record = logging.getLogger("femeso.training.warm_start").makeRecord(
        "femeso.training.warm_start", logging.INFO, __file__, 1, "warm start", (), None
    )
    assert bool(_handler.filter(record)) == (fd.COMM_WORLD.rank == 0)
