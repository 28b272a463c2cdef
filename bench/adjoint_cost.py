"""Cost of the single-step parameter gradient (discrete adjoint + PyTorch) against the step.

    python bench/adjoint_cost.py [--dofs 20000] [--steps 3]

Prints seconds per forward step and per backward (adjoint solve + coefficient sensitivities +
PyTorch back-propagation) on the plate with holes, and their ratio (issue target: <= 2).
"""

from femeso._runtime import configure_environment

configure_environment()

import argparse
import time

import firedrake as fd

import femeso
from step_cost import plate_mesh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dofs", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=3)
    args, _ = parser.parse_known_args()
    V = fd.FunctionSpace(plate_mesh(args.dofs), "CG", 1)
    energy = femeso.Energy(femeso.CoerciveNeuralDensity(width=16, seed=0), kappa=1e-3)
    mobility = femeso.ConservedMobility(femeso.NeuralField(1, 1, width=8, seed=1))
    model = femeso.OnsagerModel(V, energy, mobility=mobility)
    u0 = femeso.random_smooth_field(V, seed=0, max_wavenumber=8)
    target = femeso.random_smooth_field(V, seed=1, amplitude=0.5)
    stepper = femeso.EnergyStableStepper(model, u0, 1e-3)
    v = fd.TestFunction(V)
    forward = backward = 0.0
    for step in range(args.steps + 1):  # the first step warms up (kernels, factorisations)
        u_start = stepper.u.copy(deepcopy=True)
        t0 = time.perf_counter()
        stepper.advance()
        t1 = time.perf_counter()
        model.zero_grad()
        dL_du1 = fd.assemble((stepper.u - target) * v * fd.dx)
        stepper.restore(u_start, stepper.w)
        stepper.vjp(dL_du1, wrt_state=False)
        t2 = time.perf_counter()
        if step == 0:
            continue
        forward, backward = forward + t1 - t0, backward + t2 - t1
    if fd.COMM_WORLD.rank == 0:
        print(
            f"state DoFs {V.dim()}: forward {forward / args.steps:.3f} s/step, "
            f"backward {backward / args.steps:.3f} s/step, "
            f"adjoint/forward {backward / forward:.2f} (target <= 2)"
        )


if __name__ == "__main__":
    main()
