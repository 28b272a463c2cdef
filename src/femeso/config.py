"""The TOML configuration of a femeso job: every key documented, typed and validated.

A job file has the sections ``[job]``, ``[mesh]``, ``[data]``, ``[model]``, ``[training]``,
``[baseline]`` and ``[evaluation]``; every key is optional (the defaults are the built-in demo:
Cahn--Hilliard with a Flory--Huggins energy and the degenerate mobility ``u(1-u)`` on the plate
with holes). ``femeso config`` prints the defaults with their documentation. Unknown keys, wrong
types and out-of-range values are rejected with one line naming the key (exit status 2 from the
command line).
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# The training choices a job file may name; femeso.training.trainer validates against the same
# tuples. They live here so that reading and checking a job file needs neither PyTorch nor
# Firedrake.
NORMS = ("L2", "H1")
GRADIENTS = ("full", "cut")
OPTIMIZERS = ("adam", "adamw", "sgd", "lbfgs", "levenberg_marquardt")

__all__ = ["DEFAULTS", "EQUATIONS", "ConfigError", "JobConfig", "default_toml", "load_config"]

#: The data a job can learn from; the last three need a periodic interval mesh.
EQUATIONS = ("cahn_hilliard", "allen_cahn", "kdv", "fput", "fene")
SOURCES = ("generator", "files")
#: ``mesh.name`` of a job on its data files' own mesh (the default with ``data.source = "files"``)
MESH_FROM_FILES = "files"
FILE_FORMATS = ("auto", "xdmf", "pvd", "vtu", "femeso", "checkpoint", "grid_hdf5", "npz")
#: ``[data]`` keys of the file source; the other ``[data]`` keys belong to the generators.
FILE_KEYS = ("source", "paths", "format", "fields", "split", "max_trajectories", "train_frames")
#: ``[data]`` keys of both sources.
COMMON_DATA_KEYS = ("in_memory_mib",)
PERIODIC_1D = ("kdv", "fput", "fene")
#: The models a job can compare with femeso's (``[baseline] models``, see femeso.peers).
PEER_MODELS = ("blackbox", "fno", "meshgraphnet", "spectral_onsager")
CHAINS = ("fput", "fene")


class ConfigError(ValueError):
    """A job configuration is invalid (the message is one line naming the key)."""


@dataclass(frozen=True)
class Key:
    """A configuration key: default value, allowed type(s), documentation and a check."""

    default: Any
    doc: str
    types: tuple[type, ...] = ()
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    positive: bool = False
    items: type = float
    signed: bool = False  # list items may be any finite number (not only positive ones)

    def check(self, name: str, value: Any) -> Any:
        types = self.types or (type(self.default),)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(f"{name} must be {_names(types)}, got {value!r}")
        if not isinstance(value, types):
            raise ConfigError(
                f"{name} must be {_names(types)}, got {type(value).__name__} {value!r}"
            )
        if self.choices and isinstance(value, list):
            for item in value:
                if item not in self.choices:
                    raise ConfigError(
                        f"{name}: unknown entry {item!r}; choose from {list(self.choices)}"
                    )
            if len(set(value)) != len(value):
                raise ConfigError(f"{name} names an entry twice: {value!r}")
        elif self.choices and value not in self.choices:
            raise ConfigError(f"{name} must be one of {list(self.choices)}, got {value!r}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{name} must be finite, got {value!r}")
            if self.positive and value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
            if self.minimum is not None and value < self.minimum:
                raise ConfigError(f"{name} must be >= {self.minimum:g}, got {value!r}")
        if isinstance(value, list) and self.items is str:
            if not all(isinstance(item, str) and item for item in value):
                raise ConfigError(f"{name} must be a list of non-empty strings, got {value!r}")
        elif isinstance(value, list):
            for item in value:
                if not isinstance(item, int | float) or isinstance(item, bool):
                    raise ConfigError(f"{name} must be a list of numbers, got {value!r}")
                if not math.isfinite(item) or (item <= 0 and not self.signed):
                    kind = "finite" if self.signed else "positive"
                    raise ConfigError(f"{name} must be a list of {kind} numbers, got {value!r}")
        return value


def option(default: Any, doc: str, **checks: Any) -> Any:
    """Declare a key of a section: its default, its documentation and its checks (:class:`Key`).

    The value is a :func:`dataclasses.field` whose metadata holds the :class:`Key`; a list or
    table default is copied per instance.
    """
    key = Key(default, doc, **checks)
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"key": key})
    return field(default=default, metadata={"key": key})


def _names(types: tuple[type, ...]) -> str:
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return " or ".join(words.get(t, "a list") for t in types)


@dataclass
class JobSection:
    """``[job]``: what the job is called, where it writes, and its seed."""

    name: str = option("demo", "name of the job (used in reports)")
    output: str = option("femeso-output", "output directory (data, checkpoints, models, report)")
    seed: int = option(0, "seed of the data's initial conditions and of the networks", minimum=0)


@dataclass
class MeshSection:
    """``[mesh]``: the domain and the finite-element space of the state."""

    name: str = option(
        "plate_with_holes",
        "reference geometry (plate_with_holes, l_shape, curved_channel), a .msh/.geo file, "
        "periodic_interval / periodic_square, or files (data.source = 'files' only, and its "
        "default: the data's own mesh; any other name there resamples the data onto that mesh)",
    )
    refinement: int = option(
        0, "uniform refinements (re-meshing for reference geometries)", minimum=0
    )
    cells: int = option(64, "cells per side of the periodic interval / square meshes", minimum=2)
    length: float = option(2 * math.pi, "side length of the periodic meshes", positive=True)
    degree: int = option(1, "Lagrange degree of the state space", minimum=1)


@dataclass
class DataSection:
    """``[data]``: where the trajectories come from (femeso's generators or the user's files)."""

    source: str = option(
        "generator",
        "where the data come from: generator (femeso's own generators, the keys below) or "
        "files (a user's simulation output: data.paths, data.format, data.fields, "
        "data.split; the mesh comes from the files)",
        choices=SOURCES,
    )
    paths: list[str] = option(
        [],
        "files: the data files or glob patterns, relative to the job file's directory "
        "(XDMF/.pvd/.vtu series, femeso or Firedrake CheckpointFile HDF5, the paper's grid "
        "HDF5 u_sol_all/t_coord/x_coord, .npz); one or many trajectories per file",
        types=(list,),
        items=str,
    )
    format: str = option(
        "auto",
        "files: the file format (auto: by extension and content)",
        choices=FILE_FORMATS,
    )
    fields: list[str] = option(
        [],
        "files: the names of the fields inside the files (empty: the only one there)",
        types=(list,),
        items=str,
    )
    split: list[float] = option(
        [0.7, 0.2, 0.1],
        "files: train/validation/test fractions of the trajectories, split by whole "
        "trajectories, seeded by job.seed (the paper's 0.7/0.2/0.1)",
        types=(list,),
    )
    max_trajectories: int = option(
        0,
        "files: read at most this many trajectories (the first ones, before the split; 0: all)",
        minimum=0,
    )
    in_memory_mib: int = option(
        4096,
        "largest data file (train, validation, test; states as float64) loaded whole, in MiB; "
        "a larger one is read from disk as its trajectories are used, this much kept in memory "
        "(0: every file so, one trajectory in memory at a time)",
        minimum=0,
    )
    train_frames: int = option(
        0,
        "files: frames after the initial one kept per training/validation trajectory (0: all)",
        minimum=0,
    )
    equation: str = option(
        "cahn_hilliard",
        "the data: cahn_hilliard, allen_cahn, kdv (u_t + 6 u u_x + u_xxx = 0) on any mesh / "
        "a periodic interval, or fput / fene chains coarse-grained to a periodic interval "
        "(no classical solver for the chains)",
        choices=EQUATIONS,
    )
    initial: str = option(
        "random",
        "initial fields of the PDE data: random (smooth random fields, any mesh) or "
        "paper_sine (3 sine modes rescaled to [-1, 1], periodic meshes); the chains draw "
        "their own (the paper's 3 sine modes of unit standard deviation)",
        choices=("random", "paper_sine"),
    )
    density: str = option(
        "flory_huggins",
        "true energy density: flory_huggins (theta=0.3, theta_c=1, on (0,1)) or double_well",
        choices=("flory_huggins", "double_well"),
    )
    mobility: str | float = option(
        "degenerate",
        "true mobility: 'degenerate' (u(1-u)), 'graded' (m(u, x) = (1 + u^2)/2 * (1 + 0.8 xi), "
        "xi = (x_1 - x_1min)/(x_1max - x_1min) over the mesh's bounding box: state- and "
        "space-dependent, 0.5..1.8) or a number",
        types=(str, float),
    )
    mobility_scale: float = option(
        1.0,
        "factor of the true mobility (e.g. eps^2 for Allen-Cahn in the time unit of its "
        "reaction term)",
        positive=True,
    )
    kappa: float = option(5e-3, "true gradient-energy coefficient (Cahn-Hilliard)", positive=True)
    epsilon: float = option(0.1, "interface parameter of Allen-Cahn", positive=True)
    train: int = option(4, "training trajectories", minimum=1)
    validation: int = option(1, "validation trajectories", minimum=0)
    test: int = option(2, "test trajectories (rolled out to the long horizon)", minimum=1)
    frames: int = option(20, "frames after the initial one per training trajectory", minimum=1)
    burn_in: int | list[int] = option(
        5,
        "frames generated and dropped before the first saved one (the boundary layers of "
        "the random initial fields relax first); or [lo, hi]: each training and validation "
        "trajectory draws its own from lo..hi (seeded by its seed), so that the data reach the "
        "later, coarsened states of long rollouts; test trajectories drop lo",
        types=(int, list),
        minimum=0,
        signed=True,
    )
    frame_dt: float = option(0.01, "time between frames (the training step)", positive=True)
    substeps: int = option(4, "reference steps per frame of the data generator", minimum=1)
    refine: int = option(0, "uniform refinements of the generator's mesh", minimum=0)
    amplitude: float | list[float] = option(
        0.3,
        "amplitude of the random initial fields, or [lo, hi]: each trajectory draws its own "
        "uniformly (seeded by the trajectory's seed), so that the data tell F'' and m apart",
        types=(float, list),
        positive=True,
    )
    mean: float | list[float] = option(
        0.5,
        "mean of the random initial fields, or [lo, hi] (drawn per trajectory, as amplitude)",
        types=(float, list),
        signed=True,
    )
    wavenumber: float | list[float] = option(
        5.0,
        "largest wavenumber of the random initial fields, or [lo, hi] (drawn per trajectory)",
        types=(float, list),
        positive=True,
    )


@dataclass
class ModelSection:
    """``[model]``: the hypothesis class of the learned Onsager model."""

    width: int = option(16, "hidden width of the density and mobility networks", minimum=1)
    depth: int = option(1, "hidden layers of the networks", minimum=1)
    polynomial_degree: int = option(
        0,
        "degree p of a polynomial part of the density, c_1 u + ... + c_(p-1) u^(p-1) of any "
        "sign plus e u^p with e > 0 (coercive): 0 (none) or even >= 4, for energies the "
        "bounded network can follow only approximately (e.g. -u^4 on the data: FENE)",
        minimum=0,
    )
    dynamics: str = option(
        "auto",
        "how the mobility acts: conserved (H^-1: u_t = div(m grad mu), mass conserved, "
        "Cahn-Hilliard-like) or local (u_t = -m mu, Allen-Cahn-like); auto: from "
        "data.equation (conserved for cahn_hilliard), must be given for data.source = 'files'",
        choices=("auto", "conserved", "local"),
    )
    mobility: str = option(
        "neural",
        "mobility coefficient: neural (softplus of a network of u), neural_x (softplus of a "
        "network of u and the position x, x normalised by the mesh's bounding box; does not "
        "transfer to other meshes), neural_degenerate (neural times 4(u - lo)(hi - u)/(hi - "
        "lo)^2: vanishes at the ends of model.state_range, as u(1 - u) does), constant (1, "
        "fixed) or none (M = 0: a conservative model, which needs a transport)",
        choices=("neural", "neural_x", "neural_degenerate", "constant", "none"),
    )
    transport: str = option(
        "none",
        "conservative part W: none, or learned (skew transport along a learned constant "
        "velocity, 1-D periodic meshes; KdV and the chains)",
        choices=("none", "learned"),
    )
    velocity: float = option(1.0, "initial value of the learned transport velocity", types=(float,))
    kappa_ref: float = option(
        5e-3,
        "the gauge: the learned gradient coefficient is normalised to this mean",
        positive=True,
    )
    substeps: int = option(
        1,
        "scheme steps per data step of the learned model (and of the classical solver "
        "it is compared with), in training and rollouts; trained through all of them",
        minimum=1,
    )
    solver: str = option(
        "direct",
        "PETSc solver of the scheme's Newton steps in training and rollouts (learned model and "
        "classical solver): direct (MUMPS LU) or iterative (GMRES + overlapping additive "
        "Schwarz with subdomain LU, for meshes whose global LU is too large, e.g. 3-D on many "
        "ranks; the energy law then holds to the linear tolerance 1e-12)",
        choices=("direct", "iterative"),
    )
    state_range: list[float] = option(
        [],
        "declared range [lo, hi] of a scalar state (e.g. [0, 1] for a volume fraction): the "
        "learned density gets an entropy barrier (learned strength > 0) that keeps every "
        "rollout strictly inside it, and data outside it are refused; [] (default): none",
        types=(list,),
        signed=True,
    )
    range_entropy: bool = option(
        False,
        "with model.state_range: add a learned ideal mixing entropy theta (a ln a + b ln b), "
        "a = (u - lo)/(hi - lo), b = 1 - a, theta > 0, to the learned density, whose "
        "curvature grows like 1/a at the range's ends as the entropy of a bounded fraction "
        "does (Flory-Huggins, lattice gas, regular solution)",
    )
    input_center: float = option(
        0.5,
        "centre of the state in the mobility network's input (neural_x: the position's is "
        "the centre of the mesh's bounding box, its scale the half-widths)",
    )
    input_scale: float = option(
        0.25, "scale of the state in the mobility network's input", positive=True
    )


@dataclass
class TrainingSection:
    """``[training]``: the training phases (start, optimiser, Levenberg--Marquardt)."""

    seed: int = option(
        -1,
        "seed of the networks' initialisation (femeso's model, the baseline and the peers) and "
        "of the minibatches and validation windows; -1: job.seed. job.seed alone seeds the "
        "data and the split, so a seed study keeps both",
        minimum=-1,
    )
    iterations: int = option(
        300, "optimiser steps (0: none, e.g. warm start + Levenberg-Marquardt only)", minimum=0
    )
    warm_start: bool = option(
        False,
        "start the Onsager model from a gradient-matching least-squares fit of the data "
        "(constant mobility or velocity, polynomial F'; one mobility or one 1-D transport)",
    )
    starts: int = option(
        3,
        "with warm_start: how many candidate starts are tried and judged on the validation "
        "windows (in order: warm start of degree 5, the networks' initialisation, warm "
        "starts of degree 3 and 7)",
        minimum=1,
    )
    batch_size: int = option(8, "windows per minibatch", minimum=1)
    unroll: int = option(1, "implicit steps per window (unrolled loss)", minimum=1)
    unroll_schedule: list[int] = option(
        [],
        "a lengthening schedule: after the first-order phase, one Adam phase per entry with "
        "windows of that many steps (e.g. [2, 4, 8]), each from the best model so far and at "
        "the learning rate the first phase ended with "
        "(training.schedule_iterations steps each; the checkpointed adjoint keeps memory bounded)",
        types=(list,),
    )
    schedule_iterations: int = option(
        50, "Adam steps of each training.unroll_schedule phase", minimum=1
    )
    judge_unroll: int = option(
        0,
        "steps of the validation windows that choose the kept model across the start, the "
        "phases and the schedule (0: training.unroll); longer windows select for long rollouts",
        minimum=0,
    )
    norm: str = option("L2", "norm of the mismatch", choices=NORMS)
    gradient: str = option(
        "full", "full gradient of the unrolled loss, or cut between steps", choices=GRADIENTS
    )
    checkpoint_stride: int = option(
        1, "store every s-th state of a window (recompute the rest)", minimum=1
    )
    optimizer: str = option("adam", "PyTorch optimiser", choices=OPTIMIZERS)
    refine_iterations: int = option(
        20,
        "Levenberg-Marquardt iterations of each refine_unroll phase after the optimiser ("
        "Gauss-Newton curvature, validated every 5; 0: off)",
        minimum=0,
    )
    refine_batch_size: int = option(16, "windows per Levenberg-Marquardt iteration", minimum=1)
    refine_unroll: list[int] = option(
        [1],
        "window lengths of the Levenberg-Marquardt phases, in order: one phase of "
        "refine_iterations per entry, each from the best model so far, its Gauss-Newton "
        "tangent carried through every step of the window (e.g. [1, 2, 4])",
        types=(list,),
    )
    learning_rate: float = option(3e-3, "initial learning rate", positive=True)
    lr_decay: float = option(
        0.3, "learning-rate factor over the whole run (exponential)", positive=True
    )
    weight_decay: float = option(0.0, "weight decay", minimum=0)
    gradient_clip: float = option(0.0, "clip the gradient norm to this (0: off)", minimum=0)
    max_input_slope: float = option(
        20.0,
        "clamp the networks' first-layer weights (on normalised inputs) to this after every "
        "step: bounds F'' where no data constrain it (0: off)",
        minimum=0,
    )
    validate_every: int = option(25, "iterations between validations (0: never)", minimum=0)
    validation_windows: int = option(8, "validation windows used", minimum=0)
    checkpoint_every: int = option(
        25, "iterations between checkpoints (0: end and crash only)", minimum=0
    )


@dataclass
class BaselineSection:
    """``[baseline]``: the models femeso's is compared with, and their fits."""

    enabled: bool = option(True, "train and score the models named by baseline.models")
    models: list[str] = option(
        ["blackbox"],
        "models compared with femeso's: blackbox (unconstrained neural RHS on the FE "
        "space), fno (neuraloperator FNO, uniform grids), meshgraphnet (torch_geometric "
        "graph network, any mesh), spectral_onsager (the paper's class, periodic grids)",
        items=str,
        choices=PEER_MODELS,
    )
    width: int = option(16, "hidden width of the blackbox model's network", minimum=1)
    iterations: int = option(150, "optimiser steps of the blackbox model", minimum=1)
    learning_rate: float = option(
        3e-3, "initial learning rate of the blackbox model", positive=True
    )
    peer_iterations: int = option(
        2000, "Adam steps of the fno/meshgraphnet/spectral_onsager peers", minimum=1
    )
    peer_learning_rate: float = option(
        1e-3, "initial learning rate of the peers (cosine decay)", positive=True
    )
    peer_batch_size: int = option(32, "windows per minibatch of the peers", minimum=1)
    peer_unroll: int = option(3, "autoregressive steps per training window of the peers", minimum=1)
    options: dict[str, dict[str, Any]] = option(
        {},
        "keyword options of each peer, a table per peer, e.g. [baseline.options.fno] "
        "modes = 16, width = 64, layers = 4; iterations, learning_rate, batch_size and "
        "unroll there override baseline.peer_* for that peer",
    )


@dataclass
class EvaluationSection:
    """``[evaluation]``: the long-horizon rollouts, the step-size study and the report's files."""

    horizon_factor: int = option(10, "roll out to this many times the training horizon", minimum=1)
    step_factors: list[float] = option(
        [0.1, 1.0, 10.0, 100.0],
        "inference step sizes, as multiples of frame_dt ([]: no step-size study)",
        types=(list,),
    )
    vtk: bool = option(True, "write the rollouts as VTK for ParaView")
    plots: bool = option(True, "write PNG plots")


@dataclass
class ParallelSection:
    """``[parallel]``: how the MPI ranks of ``mpiexec -n P femeso ...`` share the work."""

    ensemble: int = option(
        1,
        "training: ensemble members sharing each minibatch's windows (Firedrake Ensemble); P "
        "ranks are split into this many members of P / ensemble spatial ranks; data generation "
        "and the report use all P ranks as one spatial communicator",
        minimum=1,
    )


#: The sections of a job file, in the order ``femeso config`` prints them.
SECTIONS: dict[str, type] = {
    "job": JobSection,
    "mesh": MeshSection,
    "data": DataSection,
    "model": ModelSection,
    "training": TrainingSection,
    "baseline": BaselineSection,
    "evaluation": EvaluationSection,
    "parallel": ParallelSection,
}

#: Every key of every section (read from the section classes, not a second table).
DEFAULTS: dict[str, dict[str, Key]] = {
    name: {f.name: f.metadata["key"] for f in fields(section)} for name, section in SECTIONS.items()
}


@dataclass
class JobConfig:
    """A validated job configuration: one typed section per table (``config.data.frame_dt``).

    Build it with :func:`validate` (a dict, e.g. parsed TOML) or :func:`load_config` (a file);
    ``JobConfig()`` is the built-in demo. :meth:`as_dict` gives the TOML tables back.
    """

    job: JobSection = field(default_factory=JobSection)
    mesh: MeshSection = field(default_factory=MeshSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    baseline: BaselineSection = field(default_factory=BaselineSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    #: where the configuration came from (a file name, or ``<defaults>``), for error messages
    source: str = field(default="<defaults>", compare=False)
    #: the directory relative paths of the job file are taken from
    directory: str = field(default=".", compare=False)

    @property
    def output(self) -> Path:
        """The job's output directory."""
        return Path(self.job.output)

    @property
    def training_seed(self) -> int:
        """The seed of the networks and the minibatches: ``training.seed``, else ``job.seed``."""
        return self.training.seed if self.training.seed >= 0 else self.job.seed

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Return the sections as plain tables (what :func:`validate` takes back)."""
        return {name: asdict(getattr(self, name)) for name in SECTIONS}


def validate(raw: dict[str, Any], source: str = "<dict>") -> JobConfig:
    """Return the full configuration: defaults overlaid with ``raw``, every key checked.

    Raises
    ------
    ConfigError
        One line naming the file and the offending key.

    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the configuration must be a table")
    for section in raw:
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{section}] (known: {', '.join(SECTIONS)})"
            )
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
    sections = {}
    for section, keys in DEFAULTS.items():
        given = raw.get(section, {})
        for key in given:
            if key not in keys:
                raise ConfigError(
                    f"{source}: unknown key {section}.{key} (known: {', '.join(keys)})"
                )
        try:
            checked = {
                key: spec.check(f"{section}.{key}", copy.deepcopy(given[key]))
                for key, spec in keys.items()
                if key in given
            }
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        sections[section] = SECTIONS[section](**checked)
    directory = str(Path(source).parent) if source not in ("<dict>", "<defaults>") else "."
    config = JobConfig(**sections, source=source, directory=directory)
    mobility = config.data.mobility
    if isinstance(mobility, str) and mobility not in ("degenerate", "graded"):
        raise ConfigError(
            f"{source}: data.mobility must be 'degenerate', 'graded' or a number, got {mobility!r}"
        )
    if isinstance(mobility, float) and mobility <= 0:
        raise ConfigError(f"{source}: data.mobility must be > 0, got {mobility!r}")
    _check_files(raw, config, source)
    _check_combinations(config, source)
    _check_peer_options(config, source)
    return config


def _check_files(raw: dict[str, Any], config: JobConfig, source: str) -> None:
    """Check the file source: its keys, and no generator or mesh key that it would ignore."""
    d = config.data
    given = raw.get("data", {})
    if d.source != "files":
        spec = DEFAULTS["data"]
        extra = sorted(
            k for k in given if k in FILE_KEYS and k != "source" and given[k] != spec[k].default
        )
        if extra:
            raise ConfigError(
                f"{source}: data.{extra[0]} needs data.source = 'files' (the generator ignores it)"
            )
        return
    if not d.paths:
        raise ConfigError(f"{source}: data.source = 'files' needs data.paths (files or globs)")
    spec = DEFAULTS["data"]
    ignored = sorted(
        k for k in given if k not in FILE_KEYS + COMMON_DATA_KEYS and given[k] != spec[k].default
    )
    if ignored:
        raise ConfigError(
            f"{source}: data.{ignored[0]} is a generator setting; data.source = 'files' takes "
            f"its data from the files (remove it)"
        )
    given_mesh = raw.get("mesh", {})
    if "name" not in given_mesh:
        config.mesh.name = MESH_FROM_FILES
    if config.mesh.name == MESH_FROM_FILES:
        mesh_keys = sorted(
            k
            for k, v in given_mesh.items()
            if k not in ("degree", "name")
            and k in DEFAULTS["mesh"]
            and v != DEFAULTS["mesh"][k].default
        )
        if mesh_keys:
            raise ConfigError(
                f"{source}: mesh.{mesh_keys[0]}: with data.source = 'files' the mesh comes from "
                "the data files unless mesh.name names another mesh (the data are then "
                "resampled onto it)"
            )
    f = d.split
    if len(f) != 3 or abs(sum(f) - 1.0) > 1e-12 or f[0] <= 0 or f[2] <= 0:
        raise ConfigError(
            f"{source}: data.split must be three fractions (train, validation, test) summing "
            f"to 1 with train > 0 and test > 0, got {f!r}"
        )
    m = config.model
    if m.dynamics == "auto" and m.mobility != "none":
        raise ConfigError(
            f"{source}: data.source = 'files' needs model.dynamics = 'conserved' or 'local' "
            "(there is no data.equation to tell)"
        )


def _check_combinations(config: JobConfig, source: str) -> None:
    """Reject combinations of valid keys that do not make a job (one line naming the keys)."""
    d, m, mesh = config.data, config.model, config.mesh.name
    if d.source == "generator" and mesh == MESH_FROM_FILES:
        raise ConfigError(
            f"{source}: mesh.name = {MESH_FROM_FILES!r} (the data's own mesh) needs "
            "data.source = 'files'"
        )
    if mesh == MESH_FROM_FILES:  # the mesh comes from the files: checked when they are read
        mesh = "periodic_interval" if m.transport == "learned" else "<from the files>"
    if d.source == "generator" and d.equation in PERIODIC_1D and mesh != "periodic_interval":
        raise ConfigError(
            f"{source}: data.equation = {d.equation!r} needs mesh.name = 'periodic_interval', "
            f"got {mesh!r}"
        )
    if d.equation in CHAINS and config.mesh.degree != 1:
        raise ConfigError(f"{source}: data.equation = {d.equation!r} needs mesh.degree = 1")
    if d.initial == "paper_sine" and not mesh.startswith("periodic_") and d.source != "files":
        raise ConfigError(
            f"{source}: data.initial = 'paper_sine' needs a periodic mesh, got mesh.name = {mesh!r}"
        )
    if d.mobility == "graded" and d.equation not in ("allen_cahn", "cahn_hilliard"):
        raise ConfigError(
            f"{source}: data.mobility = 'graded' needs a dissipative equation (allen_cahn or "
            f"cahn_hilliard), data.equation = {d.equation!r} has no mobility"
        )
    if isinstance(d.burn_in, list) and (
        len(d.burn_in) != 2
        or not all(isinstance(n, int) and n >= 0 for n in d.burn_in)
        or d.burn_in[0] > d.burn_in[1]
    ):
        raise ConfigError(
            f"{source}: data.burn_in must be a whole number of frames >= 0 or two of them "
            f"[lo, hi] with lo <= hi, got {d.burn_in}"
        )
    for key in ("amplitude", "mean", "wavenumber"):
        value = getattr(d, key)
        if isinstance(value, list) and (len(value) != 2 or value[0] > value[1]):
            raise ConfigError(
                f"{source}: data.{key} must be a number or two numbers [lo, hi] with lo <= hi, "
                f"got {value}"
            )
    if m.polynomial_degree and (m.polynomial_degree < 4 or m.polynomial_degree % 2):
        raise ConfigError(
            f"{source}: model.polynomial_degree must be 0 or an even number >= 4, "
            f"got {m.polynomial_degree}"
        )
    if m.state_range and (len(m.state_range) != 2 or m.state_range[0] >= m.state_range[1]):
        raise ConfigError(
            f"{source}: model.state_range must be [] or two numbers [lo, hi] with lo < hi, "
            f"got {m.state_range}"
        )
    if m.range_entropy and not m.state_range:
        raise ConfigError(
            f"{source}: model.range_entropy needs model.state_range = [lo, hi] (the range the "
            "entropy's fractions are taken over)"
        )
    if m.mobility == "neural_degenerate" and not m.state_range:
        raise ConfigError(
            f"{source}: model.mobility = 'neural_degenerate' needs model.state_range = [lo, hi] "
            "(the range at whose ends the mobility vanishes)"
        )
    if m.mobility == "none" and m.transport == "none":
        raise ConfigError(
            f"{source}: model.mobility = 'none' and model.transport = 'none' leave no dynamics"
        )
    t = config.training
    for key in ("unroll_schedule", "refine_unroll"):
        lengths = getattr(t, key)
        if any(k != int(k) or k < 1 for k in lengths) or len(set(lengths)) != len(lengths):
            raise ConfigError(
                f"{source}: training.{key} must list whole numbers of steps >= 1, each once "
                f"(a phase per length), got {lengths}"
            )
        setattr(t, key, [int(k) for k in lengths])
    if t.refine_iterations and not t.refine_unroll:
        raise ConfigError(
            f"{source}: training.refine_iterations = {t.refine_iterations} needs at least one "
            "window length in training.refine_unroll"
        )
    if t.iterations == 0 and t.refine_iterations == 0:
        raise ConfigError(
            f"{source}: training.iterations = 0 and training.refine_iterations = 0 train nothing"
        )
    if t.warm_start and m.mobility != "none" and m.transport != "none":
        raise ConfigError(
            f"{source}: training.warm_start needs one dissipative or one conservative part, "
            "not model.mobility and model.transport together"
        )
    if m.transport == "learned" and mesh != "periodic_interval":
        raise ConfigError(
            f"{source}: model.transport = 'learned' needs mesh.name = 'periodic_interval', "
            f"got {mesh!r}"
        )


def load_config(path: str | Path | None) -> JobConfig:
    """Read and validate a TOML job file (``None``: the built-in defaults)."""
    if path is None:
        return validate({}, "<defaults>")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return validate(raw, str(path))


def _check_peer_options(config: JobConfig, source: str) -> None:
    """``baseline.options`` holds one table per peer named in ``baseline.models``."""
    options = config.baseline.options
    for name, table in options.items():
        if name not in PEER_MODELS or name == "blackbox":
            raise ConfigError(
                f"{source}: baseline.options.{name}: no peer of that name has options "
                f"(peers: {[p for p in PEER_MODELS if p != 'blackbox']})"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: baseline.options.{name} must be a table")
        # the fit settings a peer may override are checked by baseline.peer_<key>'s own Key
        for key in ("iterations", "learning_rate", "batch_size", "unroll"):
            if key in table:
                spec = DEFAULTS["baseline"][f"peer_{key}"]
                try:
                    table[key] = spec.check(f"baseline.options.{name}.{key}", table[key])
                except ConfigError as exc:
                    raise ConfigError(f"{source}: {exc}") from None


#: The built-in demo (``femeso demo``, ``make demo``): the defaults (Flory--Huggins
#: Cahn--Hilliard with the degenerate mobility on the plate with holes) trained for 10x their
#: horizon -- the declared range (0, 1) with its learned mixing entropy, 12 training trajectories
#: from varied initial fields that start late in the coarsening, 60 Levenberg--Marquardt
#: iterations, the kept model chosen on 10-step validation windows (docs/demo.md,
#: docs/results.md "Long horizons").
DEMO_JOB: dict[str, dict[str, Any]] = {
    "job": {"name": "demo"},
    "data": {
        "train": 12,
        "mean": [0.35, 0.65],
        "amplitude": [0.1, 0.25],
        "wavenumber": [3.0, 6.0],
        "burn_in": [5, 185],
    },
    "model": {"state_range": [0, 1], "range_entropy": True},
    # 4 windows per Adam step and 8 per Levenberg-Marquardt iteration, no step-size study: the
    # demo's wall time (docs/results.md, "The curved channel at 10x ... and the demo's time")
    "training": {
        "batch_size": 4,
        "refine_iterations": 60,
        "refine_batch_size": 8,
        "judge_unroll": 10,
    },
    "evaluation": {"step_factors": []},
}


def demo_config(output: str | Path) -> JobConfig:
    """Return the built-in demo's configuration (:data:`DEMO_JOB`) writing to ``output``."""
    raw = {section: dict(keys) for section, keys in DEMO_JOB.items()}
    raw["job"]["output"] = str(output)
    return validate(raw, "<demo>")


def demo_toml() -> str:
    """Return the built-in demo as a job file (the keys it sets; the rest are the defaults)."""
    lines = [
        "# femeso's built-in demo (femeso demo): these keys, the others at their defaults.",
        "",
    ]
    for section, keys in DEMO_JOB.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in keys.items()]
        lines.append("")
    return "\n".join(lines)


def default_toml() -> str:
    """Return the defaults as a commented TOML file."""
    lines = ["# femeso job configuration: every key, its default and its meaning.", ""]
    for section, keys in DEFAULTS.items():
        lines.append(f"[{section}]")
        for key, spec in keys.items():
            lines.append(f"# {spec.doc}")
            lines.append(f"{key} = {_toml_value(spec.default)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
