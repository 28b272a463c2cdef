"""The ``femeso`` command against a careless or hostile user: nothing overwritten unless asked.

Issue 16 found ``generate`` replacing data beside old models, ``train`` replacing a finished run,
a whole generation running before an output path under a regular file failed, a non-UTF-8 job
file refused without its name, and ``data.validation = 0`` failing after writing ``train.h5``.
Each case goes through ``femeso.cli.main`` as the command does and checks the exit status, the
one error line naming the file, and that what existed is unchanged.
"""

import hashlib
from pathlib import Path

import pytest

from femeso.cli import main

JOB = """
[job]
name = "guards"
output = "{out}"
[mesh]
name = "periodic_interval"
cells = 32
[data]
equation = "allen_cahn"
train = 2
validation = {validation}
test = 1
frames = 3
[training]
iterations = 2
batch_size = 2
validate_every = 2
checkpoint_every = 2
refine_iterations = 0
warm_start = false
starts = 1
[baseline]
enabled = false
"""


def job(tmp_path: Path, *, validation: int = 1, out: Path | None = None) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(JOB.format(out=out or tmp_path / "out", validation=validation))
    return path


def digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-1 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_error_line(capsys, command: str, *words: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"femeso {command}: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A job whose data exist (generated once for the module)."""
    root = tmp_path_factory.mktemp("guards")
    assert main(["generate", str(job(root)), "-q"]) == 0
    return root


def test_generate_refuses_to_replace_data_without_overwrite(generated, capsys):
    before = digests(generated / "out")
    assert main(["generate", str(generated / "job.toml"), "-q"]) == 2
    one_error_line(capsys, "generate", "train.h5", "--overwrite")
    assert digests(generated / "out") == before


def test_train_refuses_to_replace_a_trained_model_then_overwrite_replaces_all(
    generated, capsys, tmp_path
):
    root = tmp_path / "copy"
    root.mkdir()
    config = job(root)
    assert main(["generate", str(config), "-q"]) == 0
    assert main(["train", str(config), "-q", "--model", "onsager"]) == 0
    before = digests(root / "out")
    assert "onsager/model.npz" in before
    capsys.readouterr()
    assert main(["train", str(config), "-q", "--model", "onsager"]) == 2
    one_error_line(capsys, "train", "--resume", "--overwrite")
    assert digests(root / "out") == before
    # New data with --overwrite take the results of the old data with them.
    assert main(["generate", str(config), "-q", "--overwrite"]) == 0
    assert not (root / "out" / "onsager").exists()
    assert (root / "out" / "data" / "train.h5").exists()


def test_an_output_under_a_regular_file_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    config = job(tmp_path, out=blocker / "run")
    assert main(["generate", str(config), "-q"]) == 2
    one_error_line(capsys, "generate", str(blocker), "is a file")
    assert blocker.read_text() == "a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.toml", "results"]


def test_a_job_file_that_is_not_utf8_is_named(tmp_path, capsys):
    config = tmp_path / "job.toml"
    config.write_bytes(b'[job]\nname = "caf\xe9"\n')
    assert main(["generate", str(config), "-q"]) == 2
    one_error_line(capsys, "generate", "job.toml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.toml"]


def test_a_job_without_validation_data_generates_and_trains(tmp_path, capsys):
    config = job(tmp_path, validation=0)
    assert main(["generate", str(config), "-q"]) == 0
    data = tmp_path / "out" / "data"
    assert (data / "train.h5").exists() and not (data / "validation.h5").exists()
    assert main(["train", str(config), "-q", "--model", "onsager"]) == 0
    assert (tmp_path / "out" / "onsager" / "model.npz").exists()
