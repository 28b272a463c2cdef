"""femeso: learning Onsager-structured mesoscopic dynamics on finite-element meshes.

The public surface::

    energy = femeso.Energy(femeso.CoerciveNeuralDensity(width=16), kappa=1.0)
    model = femeso.OnsagerModel(V, energy, mobility=femeso.ConservedMobility(1.0))
    stepper = femeso.EnergyStableStepper(model, u0, dt=1e-2)
    trajectory = stepper.rollout(100)

Importing :mod:`femeso` is cheap and changes nothing (no environment variable, no warning filter).
The first use of a public name starts Firedrake (:func:`femeso._runtime.start_firedrake`) and
imports the module that defines it. The ``femeso`` command, the test-suite and the Makefile apply
the run-time settings (threads, kernel caches, Open MPI's root permission:
:func:`femeso._runtime.configure_environment`).
"""

# ruff: noqa: F401  -- the TYPE_CHECKING imports are for type checkers only
from typing import TYPE_CHECKING

from femeso._runtime import lazy_exports

_EXPORTS = {
    "BlackBoxModel": "femeso.peers.blackbox",
    "BlackBoxStepper": "femeso.peers.blackbox",
    "differentiable_rollout": "femeso.training.bridge",
    "CoerciveNeuralDensity": "femeso.model.energies",
    "ConstantKappa": "femeso.model.energies",
    "Energy": "femeso.model.energies",
    "KnownDensity": "femeso.model.energies",
    "NeuralKappa": "femeso.model.energies",
    "NonlocalEnergy": "femeso.model.energies",
    "Expression": "femeso.model.fields",
    "NeuralField": "femeso.model.fields",
    "OnsagerModel": "femeso.model.onsager",
    "load_model": "femeso.model.onsager",
    "random_smooth_field": "femeso.data.initial_conditions",
    "available_meshes": "femeso.meshes",
    "load_mesh": "femeso.meshes",
    "mesh_path": "femeso.meshes",
    "CanonicalCoupling": "femeso.model.mobilities",
    "ConservedMobility": "femeso.model.mobilities",
    "LocalMobility": "femeso.model.mobilities",
    "SkewTransport": "femeso.model.mobilities",
    "TensorMobility": "femeso.model.mobilities",
    "DIRECT_SOLVER": "femeso.stepping.energy_stable",
    "ITERATIVE_SOLVER": "femeso.stepping.energy_stable",
    "EnergyStableStepper": "femeso.stepping.energy_stable",
    "StepFailure": "femeso.stepping.energy_stable",
    "StepRecord": "femeso.stepping.energy_stable",
    "Trajectory": "femeso.stepping.energy_stable",
    "Trainer": "femeso.training.trainer",
    "TrainingConfig": "femeso.training.trainer",
}

__version__ = "0.1.0"

__all__ = sorted([*_EXPORTS, "__version__"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names load on use
    from femeso.data.initial_conditions import random_smooth_field
    from femeso.meshes import available_meshes, load_mesh, mesh_path
    from femeso.model.energies import (
        CoerciveNeuralDensity,
        ConstantKappa,
        Energy,
        KnownDensity,
        NeuralKappa,
        NonlocalEnergy,
    )
    from femeso.model.fields import Expression, NeuralField
    from femeso.model.mobilities import (
        CanonicalCoupling,
        ConservedMobility,
        LocalMobility,
        SkewTransport,
        TensorMobility,
    )
    from femeso.model.onsager import OnsagerModel, load_model
    from femeso.peers.blackbox import BlackBoxModel, BlackBoxStepper
    from femeso.stepping.energy_stable import (
        DIRECT_SOLVER,
        ITERATIVE_SOLVER,
        EnergyStableStepper,
        StepFailure,
        StepRecord,
        Trajectory,
    )
    from femeso.training.bridge import differentiable_rollout
    from femeso.training.trainer import Trainer, TrainingConfig
