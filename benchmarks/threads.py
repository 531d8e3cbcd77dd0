"""A training step under the OpenMP wait policies, on an idle machine and with one core kept busy.

    python benchmarks/threads.py [--runs 4] [--steps 10]

Each setting runs in a fresh process (OpenMP reads its policy when torch is loaded): torch's
default thread count with the spinning (ACTIVE) and the sleeping (PASSIVE) wait policy, and one
thread, each first on an otherwise idle machine, then with another process spinning on one core.
Prints milliseconds per run-step of a batched soft VQ-VAE step (``train_many``'s step, R runs).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

STEP = r"""
import time, torch, vqlib
from vqlib.training import _Run, _Stack
runs, steps = {runs}, {steps}
data = vqlib.load_dataset("mnist5k")
configs = [vqlib.RunConfig(dataset="mnist5k", batch_size=64, device="cpu", seed=s) for s in range(runs)]
stack = _Stack([_Run.start(c, None, data, torch.device("cpu")) for c in configs], torch.device("cpu"))
x = data.x_train[torch.randint(len(data.x_train), (runs, 64))]
noise = torch.randn(runs, 64, configs[0].code_dim)
def step():
    loss = stack.loss_fn(x, noise, stack.latent_weight, "bernoulli", None)[0]
    stack.optimizer.zero_grad(); loss.sum().backward(); stack.optimizer.step()
for _ in range(3): step()
start = time.perf_counter()
for _ in range(steps): step()
print(1000 * (time.perf_counter() - start) / steps / runs)
"""

SETTINGS = {"default threads, spinning (ACTIVE)": {"OMP_WAIT_POLICY": "ACTIVE"},
            "default threads, sleeping (PASSIVE)": {"OMP_WAIT_POLICY": "PASSIVE"},
            "1 thread": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}}


def time_step(env: dict, runs: int, steps: int) -> float:
    out = subprocess.run([sys.executable, "-c", STEP.format(runs=runs, steps=steps)], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="runs trained together (default: 4)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: 10)")
    args = parser.parse_args()
    for load in ("idle", "one core busy"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "idle" else None
        try:
            for name, env in SETTINGS.items():
                print(f"{load:>13}, {name}: {time_step(env, args.runs, args.steps):.1f} ms per run-step", flush=True)
        finally:
            if busy is not None:
                busy.kill()


if __name__ == "__main__":
    main()
