"""The import of a files job streams: one trajectory read, checked and written at a time.

The data are a grid HDF5 file in the paper's layout written by plain h5py. The import's split
files must hold exactly what an in-memory read and split holds; a trajectory beyond
``data.max_trajectories`` is never read; an error in the middle of the file leaves no data file
behind (the split files being written are abandoned).
"""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from femeso import jobs
from femeso.config import validate
from femeso.data.io import DataReader, load_dataset, read_data
from femeso.data.mapping import map_dataset

N, FRAMES, POINTS = 10, 6, 32


def paper_file(path: Path, *, nan_in: int | None = None) -> Path:
    """Write (N, FRAMES, POINTS, 1) float32 with t_coord and x_coord, like the paper's files."""
    x = np.arange(POINTS) * (2 * np.pi / POINTS)
    t = np.arange(FRAMES) * 0.01
    u = np.stack(
        [np.sin((i % 3 + 1) * x[None, :] + t[:, None] * (i + 1)) * (1 + 0.1 * i) for i in range(N)]
    )
    if nan_in is not None:
        u[nan_in, 3, 7] = np.nan
    with h5py.File(path, "w") as h5:
        h5["u_sol_all"] = u[..., None].astype(np.float32)
        h5["t_coord"] = t.astype(np.float32)
        h5["x_coord"] = x.astype(np.float32)
    return path


def files_job(tmp_path: Path, data: Path, **data_keys) -> object:
    raw = {
        "job": {"output": str(tmp_path / "out"), "seed": 5},
        "data": {"source": "files", "paths": [str(data)], **data_keys},
        "model": {"dynamics": "local"},
    }
    return validate(raw, str(tmp_path / "job.toml"))


def test_the_streamed_import_equals_an_in_memory_read_and_split(tmp_path):
    data = paper_file(tmp_path / "paper.h5")
    assert len(DataReader([data])) == N  # counted from the header, nothing read
    paths = jobs.generate(files_job(tmp_path, data, train_frames=4))
    expected = read_data(data).split(5, (0.7, 0.2, 0.1))
    for name, part in zip(("train", "validation", "test"), expected, strict=True):
        stored = map_dataset(load_dataset(paths[name]), part.space)  # by coordinates
        assert stored.metadata["split"] == part.metadata["split"]
        assert len(stored) == len(part)
        keep = 5 if name != "test" else FRAMES  # train_frames = 4: 5 states kept
        for a, b in zip(stored, part, strict=True):
            assert len(a) == keep
            assert np.array_equal(a.times, b.times[:keep])
            for sa, sb in zip(a.states, b.states[:keep], strict=True):
                assert np.array_equal(sa.dat.data_ro, sb.dat.data_ro)


def test_a_trajectory_beyond_max_trajectories_is_never_read(tmp_path):
    data = paper_file(tmp_path / "paper.h5", nan_in=N - 1)
    with pytest.raises(ValueError, match=f"trajectory {N - 1}, frame 3"):
        jobs.generate(files_job(tmp_path, data))
    paths = jobs.generate(files_job(tmp_path, data, max_trajectories=N - 1), overwrite=True)
    assert sum(len(load_dataset(p)) for p in paths.values()) == N - 1


def test_an_error_in_the_middle_of_the_files_leaves_no_data_file(tmp_path):
    data = paper_file(tmp_path / "paper.h5", nan_in=6)
    with pytest.raises(ValueError, match="trajectory 6, frame 3") as error:
        jobs.generate(files_job(tmp_path, data))
    assert "\n" not in str(error.value)
    folder = tmp_path / "out" / "data"
    # trajectories 0-5 had been written to the split files: all abandoned, temporaries too
    leftovers = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert leftovers == []


@pytest.mark.parallel(nprocs=2)
def test_the_streamed_import_on_two_ranks_equals_the_serial_read(tmp_path):
    import firedrake as fd

    comm = fd.COMM_WORLD
    root = Path(comm.bcast(str(tmp_path), root=0))
    if comm.rank == 0:
        paper_file(root / "paper.h5")
    comm.barrier()
    paths = jobs.generate(files_job(root, root / "paper.h5"))
    expected = read_data(root / "paper.h5", comm=fd.COMM_SELF).split(5, (0.7, 0.2, 0.1))
    for name, part in zip(("train", "validation", "test"), expected, strict=True):
        # the 2-rank file read serially, put onto the serial read's numbering by coordinates
        stored = map_dataset(load_dataset(paths[name], comm=fd.COMM_SELF), part.space)
        assert stored.metadata["split"] == part.metadata["split"]
        for a, b in zip(stored, part, strict=True):
            for sa, sb in zip(a.states, b.states, strict=True):
                assert np.array_equal(sa.dat.data_ro, sb.dat.data_ro)


def test_a_stored_dataset_reads_trajectories_when_used_and_keeps_a_few(tmp_path):
    from femeso.data.io import open_dataset
    from femeso.data.trajectories import AllStates

    paths = jobs.generate(files_job(tmp_path, paper_file(tmp_path / "paper.h5")))
    space = jobs.build_space(files_job(tmp_path, tmp_path / "paper.h5"))
    eager = map_dataset(load_dataset(paths["train"]), space)
    stored = open_dataset(paths["train"], space, keep=2)
    store = stored[0].states.store
    assert store.loads == 0 and len(stored) == len(eager) == 7  # nothing read yet
    for i in (0, 1, 0):
        assert all(
            np.array_equal(a.dat.data_ro, b.dat.data_ro)
            for a, b in zip(stored[i].states[1:4], eager[i].states[1:4], strict=True)
        )
    assert store.loads == 2  # trajectory 0 came from memory the second time
    stored[2].states[0]  # read: pushes out 1, the least recently used
    stored[0].states[-1]  # from memory
    assert store.loads == 3 and list(store._cache) == [2, 0]
    stored[1].states[0]  # read again
    assert store.loads == 4 and list(store._cache) == [0, 1]
    every = AllStates(stored)
    assert len(every) == sum(len(t) for t in eager)
    assert np.array_equal(every[FRAMES + 1].dat.data_ro, eager[1].states[1].dat.data_ro)
    store.close()
    with pytest.raises(ValueError, match="closed"):
        stored[5].states[0]


def test_training_on_data_read_when_used_equals_training_in_memory(tmp_path, caplog):
    """data.in_memory_mib = 0: every file read from disk, one trajectory in memory at a time."""
    data = paper_file(tmp_path / "paper.h5")
    models, histories = {}, {}
    for budget in (4096, 0):
        root = tmp_path / f"budget_{budget}"
        raw = {
            "job": {"output": str(root), "seed": 5},
            "data": {"source": "files", "paths": [str(data)], "in_memory_mib": budget},
            "model": {"dynamics": "local", "width": 8},
            "training": {
                "iterations": 3,
                "batch_size": 4,
                "refine_iterations": 2,
                "validate_every": 1,
                "validation_windows": 4,
            },
            "baseline": {"enabled": False},
        }
        config = validate(raw, str(tmp_path / "job.toml"))
        jobs.generate(config, progress=False)
        with caplog.at_level("INFO", logger="femeso"):
            jobs.train(config, progress=False)
        read_when_used = [
            r.message for r in caplog.records if "read from the file when" in r.message
        ]
        caplog.clear()
        assert bool(read_when_used) == (budget == 0), read_when_used
        with np.load(root / "onsager" / "model.npz") as arrays:
            models[budget] = {k: arrays[k] for k in arrays.files}
        histories[budget] = {}
        for path in sorted((root / "onsager").rglob("history.json")):  # Adam, then LM
            history = json.loads(path.read_text())
            for record in history["records"]:
                record.pop("seconds")  # wall time: the one thing that may differ
            histories[budget][str(path.relative_to(root))] = history["records"]
    assert models[0].keys() == models[4096].keys()
    for key in models[0]:
        assert np.array_equal(models[0][key], models[4096][key]), key
    assert histories[0] == histories[4096]
    # 3 Adam and 2 Levenberg-Marquardt iterations
    assert sorted(len(records) for records in histories[0].values()) == [2, 3]


@pytest.mark.parallel(nprocs=2)
def test_a_stored_dataset_on_two_ranks_equals_the_loaded_one(tmp_path):
    import firedrake as fd

    from femeso.data.io import open_dataset

    comm = fd.COMM_WORLD
    root = Path(comm.bcast(str(tmp_path), root=0))
    if comm.rank == 0:
        paper_file(root / "paper.h5")
    comm.barrier()
    config = files_job(root, root / "paper.h5")
    paths = jobs.generate(config, progress=False)
    space = jobs.build_space(config)
    eager = map_dataset(load_dataset(paths["train"]), space)
    stored = open_dataset(paths["train"], space, keep=1)
    for i in (0, 0, 1, 0):
        for a, b in zip(stored[i].states, eager[i].states, strict=True):
            assert np.array_equal(a.dat.data_ro, b.dat.data_ro)
    assert stored[0].states.store.loads == 3
    stored[0].states.store.close()
