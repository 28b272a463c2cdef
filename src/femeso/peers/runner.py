"""The peers of a job: which ones, with which options, trained and loaded from its output folder.

``[baseline] models`` names them (``"blackbox"`` is femeso's own black-box model, trained by
:mod:`femeso.jobs` like the Onsager model and reported as ``baseline``; the others are
:class:`~femeso.peers.base.Peer` modules). Each peer's folder, ``<output>/<name>/``, receives
``model.pt`` (:meth:`~femeso.peers.base.Peer.save`) and ``training.json`` (the
:class:`~femeso.peers.base.FitSummary`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from femeso._log import logger
from femeso.config import JobConfig
from femeso.data.trajectories import Dataset
from femeso.evaluation import write_json
from femeso.peers import peer_class
from femeso.peers.base import FitSettings, Peer, PeerStepper, fit
from femeso.peers.nodal import NodalLayout

__all__ = [
    "blackbox_enabled",
    "load_peers",
    "peer_directory",
    "peer_names",
    "peer_steppers",
    "train_peers",
]


def peer_names(config: JobConfig) -> list[str]:
    """Return the :class:`~femeso.peers.base.Peer` models of the job (not ``blackbox``)."""
    if not config.baseline.enabled:
        return []
    return [m for m in config.baseline.models if m != "blackbox"]


def blackbox_enabled(config: JobConfig) -> bool:
    """Whether the job trains femeso's black-box model (reported as ``baseline``)."""
    return bool(config.baseline.enabled) and "blackbox" in config.baseline.models


def peer_directory(config: JobConfig, name: str) -> Path:
    """Return the folder of a peer's results."""
    return config.output / name


#: Keys of ``[baseline.options.<peer>]`` that set the peer's training, not its constructor:
#: each overrides ``baseline.peer_<key>`` for that peer alone.
FIT_OPTIONS = ("iterations", "learning_rate", "batch_size", "unroll")


def fit_settings(config: JobConfig, name: str | None = None) -> FitSettings:
    """Return the training settings of peer ``name`` (``None``: the shared ones).

    ``baseline.peer_iterations``, ``peer_learning_rate``, ``peer_batch_size`` and ``peer_unroll``
    hold for every peer unless ``[baseline.options.<name>]`` sets ``iterations``,
    ``learning_rate``, ``batch_size`` or ``unroll``; validation follows ``[training]``.
    """
    b, t = config.baseline, config.training
    own = b.options.get(name, {}) if name is not None else {}
    value = {key: own.get(key, getattr(b, f"peer_{key}")) for key in FIT_OPTIONS}
    return FitSettings(
        **value,
        validate_every=t.validate_every,
        validation_windows=max(t.validation_windows, 256),
        seed=config.training_seed,
    )


def build_peer(config: JobConfig, name: str, layout: NodalLayout, dt: float) -> Peer:
    """Return the untrained peer ``name`` with the job's options (one-line errors).

    The network's initialisation is seeded with ``training.seed`` (default ``job.seed``): a job
    trained twice starts from the same weights.
    """
    cls = peer_class(name)
    options = {
        k: v for k, v in config.baseline.options.get(name, {}).items() if k not in FIT_OPTIONS
    }
    torch.manual_seed(config.training_seed)  # the network's initialisation
    try:
        return cls(layout, dt, **options)
    except TypeError as exc:
        raise ValueError(f"baseline.options.{name}: {exc}") from None


def data_step(data: Dataset) -> float:
    """Return the frame step of the data (the step every peer learns)."""
    times = data.trajectories[0].times
    return float(np.mean(np.diff(times)))


def train_peers(
    config: JobConfig,
    space: Any,
    data: dict[str, Dataset],
    *,
    progress: bool,
    resume: bool = False,
) -> dict[str, dict[str, Any]]:
    """Train every peer of the job on the training data; save each; return their summaries.

    With ``resume``, a peer whose ``model.pt`` and ``training.json`` exist is not trained again
    (its saved summary is returned).
    """
    names = peer_names(config)
    if not names:
        return {}
    layout = NodalLayout(space)
    dt = data_step(data["train"])
    validation = data["validation"] if len(data["validation"]) else None
    if validation is None:
        logger.warning("peers: no validation data; the last parameters of each peer are kept")
    out = {}
    for name in names:
        directory = peer_directory(config, name)
        saved = training_summary(config, name)
        if resume and saved is not None and (directory / "model.pt").exists():
            logger.info("train %s: trained already (%s), kept", name, directory)
            out[name] = saved
            continue
        peer = build_peer(config, name, layout, dt)
        settings = fit_settings(config, name)
        summary = fit(peer, data["train"], validation, settings, progress=progress)
        peer.save(directory / "model.pt")
        record = {**summary.to_dict(), "model": summary.kept}
        write_json(directory / "training.json", record, comm=layout.comm)
        out[name] = record
    return out


def load_peers(config: JobConfig, space: Any, dt: float) -> dict[str, Peer]:
    """Return the trained peers of the job (``FileNotFoundError`` naming a missing one)."""
    names = peer_names(config)
    if not names:
        return {}
    layout = NodalLayout(space)
    peers = {}
    for name in names:
        path = peer_directory(config, name) / "model.pt"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `femeso train` first")
        peer = build_peer(config, name, layout, dt)
        peer.load_parameters(path)
        peer.eval()
        peers[name] = peer
    return peers


def peer_steppers(config: JobConfig, space: Any, dt: float) -> dict[str, Any]:
    """Return ``make_stepper(u0, dt)`` of every trained peer, by name."""
    return {
        name: (lambda u0, step, peer=peer: PeerStepper(peer, u0, step))
        for name, peer in load_peers(config, space, dt).items()
    }


def training_summary(config: JobConfig, name: str) -> dict[str, Any] | None:
    """Return the saved summary of a peer's training (``None`` when absent)."""
    path = peer_directory(config, name) / "training.json"
    return json.loads(path.read_text()) if path.exists() else None
