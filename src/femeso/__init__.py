"""femeso: learning Onsager-structured mesoscopic dynamics on finite-element meshes.

The public surface::

    energy = femeso.Energy(femeso.CoerciveNeuralDensity(width=16), kappa=1.0)
    model = femeso.OnsagerModel(V, energy, mobility=femeso.ConservedMobility(1.0))
    stepper = femeso.EnergyStableStepper(model, u0, dt=1e-2)
    trajectory = stepper.rollout(100)

Importing :mod:`femeso` is cheap: it applies the run-time environment (threads, kernel caches,
Open MPI's root permission) and nothing else. The first use of a public name starts Firedrake
(:func:`femeso._runtime.start_firedrake`) and imports the module that defines it.
"""

# ruff: noqa: F401  -- the TYPE_CHECKING imports are for type checkers only
from typing import TYPE_CHECKING

from femeso._runtime import configure_environment, lazy_exports, quiet_unactionable_warnings

configure_environment()
quiet_unactionable_warnings()

_EXPORTS = {
    "BlackBoxModel": "femeso.baseline",
    "BlackBoxStepper": "femeso.baseline",
    "CoerciveNeuralDensity": "femeso.energies",
    "ConstantKappa": "femeso.energies",
    "Energy": "femeso.energies",
    "KnownDensity": "femeso.energies",
    "NeuralKappa": "femeso.energies",
    "NonlocalEnergy": "femeso.energies",
    "Expression": "femeso.fields",
    "NeuralField": "femeso.fields",
    "OnsagerModel": "femeso.hypothesis",
    "load_model": "femeso.hypothesis",
    "random_smooth_field": "femeso.initial_conditions",
    "available_meshes": "femeso.meshes",
    "load_mesh": "femeso.meshes",
    "mesh_path": "femeso.meshes",
    "CanonicalCoupling": "femeso.mobilities",
    "ConservedMobility": "femeso.mobilities",
    "LocalMobility": "femeso.mobilities",
    "SkewTransport": "femeso.mobilities",
    "TensorMobility": "femeso.mobilities",
    "DIRECT_SOLVER": "femeso.steppers",
    "ITERATIVE_SOLVER": "femeso.steppers",
    "EnergyStableStepper": "femeso.steppers",
    "StepFailure": "femeso.steppers",
    "StepRecord": "femeso.steppers",
    "Trajectory": "femeso.steppers",
    "Trainer": "femeso.training",
    "TrainingConfig": "femeso.training",
}

__version__ = "0.1.0"

__all__ = sorted([*_EXPORTS, "__version__"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names load on use
    from femeso.baseline import BlackBoxModel, BlackBoxStepper
    from femeso.energies import (
        CoerciveNeuralDensity,
        ConstantKappa,
        Energy,
        KnownDensity,
        NeuralKappa,
        NonlocalEnergy,
    )
    from femeso.fields import Expression, NeuralField
    from femeso.hypothesis import OnsagerModel, load_model
    from femeso.initial_conditions import random_smooth_field
    from femeso.meshes import available_meshes, load_mesh, mesh_path
    from femeso.mobilities import (
        CanonicalCoupling,
        ConservedMobility,
        LocalMobility,
        SkewTransport,
        TensorMobility,
    )
    from femeso.steppers import (
        DIRECT_SOLVER,
        ITERATIVE_SOLVER,
        EnergyStableStepper,
        StepFailure,
        StepRecord,
        Trajectory,
    )
    from femeso.training import Trainer, TrainingConfig
