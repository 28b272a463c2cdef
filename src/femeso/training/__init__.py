"""Training: losses and the trainer, optimisers, phases, starts and the PyTorch bridge.

- :mod:`femeso.training.trainer` -- window losses, their adjoint gradients and
  :class:`Trainer`;
- :mod:`femeso.training.gauss_newton` -- the Gauss--Newton tangent and Levenberg--Marquardt;
- :mod:`femeso.training.warm_start` -- the gradient-matching warm start;
- :mod:`femeso.training.phases` -- training as a list of phases judged on validation;
- :mod:`femeso.training.bridge` -- ``loss.backward()`` through a rollout.

The names load on first use.
"""

from femeso._runtime import lazy_exports

_EXPORTS = {
    "Trainer": "femeso.training.trainer",
    "TrainingConfig": "femeso.training.trainer",
    "fit": "femeso.training.trainer",
    "one_step_pairs": "femeso.training.trainer",
    "window_loss": "femeso.training.trainer",
    "window_loss_and_gradient": "femeso.training.trainer",
    "START_CANDIDATES": "femeso.training.phases",
    "BestModel": "femeso.training.phases",
    "ChooseStart": "femeso.training.phases",
    "Optimise": "femeso.training.phases",
    "PhasedTraining": "femeso.training.phases",
    "choose_start": "femeso.training.phases",
    "LevenbergMarquardt": "femeso.training.gauss_newton",
    "WindowCurvature": "femeso.training.gauss_newton",
    "state_tangent": "femeso.training.gauss_newton",
    "step_jacobian": "femeso.training.gauss_newton",
    "window_curvature": "femeso.training.gauss_newton",
    "GradientMatch": "femeso.training.warm_start",
    "WarmStart": "femeso.training.warm_start",
    "gradient_matching": "femeso.training.warm_start",
    "RolloutFunction": "femeso.training.bridge",
    "differentiable_rollout": "femeso.training.bridge",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
