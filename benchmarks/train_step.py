"""Speed of one training step of the paper's MNIST MLP soft VQ-VAE against this machine's floor.

    python benchmarks/train_step.py [--steps 300] [--repeats 3]

Prints, from one run: milliseconds per step of ``vqlib.train`` (batch 64, K = 128, d = 64, the
library's real loop on in-memory mnist5k), milliseconds for the matrix multiplies of the same step
alone (every Linear layer's forward x @ W^T and backward g^T @ x, g @ W except for the first layer,
whose input needs no gradient, plus the estimator's responsibilities @ codebook: the floor for this
machine), and, on its last line, their ratio. Before it, for context, the same multiplies followed by
one fused Adam update of all 3.8 M parameters: Adam reads and writes 28 bytes per parameter, so on a
CPU its memory traffic alone is a sizeable part of a step that no loop can avoid. Where a GPU is
available it also reports steps per second there and the time for the paper's 40,000 steps.
"""

from __future__ import annotations

import argparse
import time

import torch

from vqlib import RunConfig, load_dataset, train
from vqlib.model import Autoencoder
from vqlib.optim import AdamStep

CONFIG = dict(dataset="mnist5k", bottleneck="soft_vq", batch_size=64, num_codes=128, code_dim=64, log_every=100,
              checkpoint_every=10**9)


def ms_per_step(dataset, device: str, steps: int, repeats: int) -> float:
    """Best of ``repeats`` timed runs of ``steps`` steps, after a warm-up run."""
    config = RunConfig(**CONFIG, num_iterations=steps, device=device)
    train(config.replace(num_iterations=20), dataset=dataset, progress=False)  # warm-up
    times = []
    for _ in range(repeats):
        result = train(config, dataset=dataset, progress=False)
        if result.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(result.wall_time / steps)
    return 1000 * min(times)


def matmul_floor_ms(input_dim: int, steps: int, repeats: int, with_adam: bool = False) -> float:
    """The matrix multiplies of one forward + backward step, and nothing else (``with_adam``: then
    one fused Adam update of parameters, gradients and moments of the model's sizes)."""
    config = RunConfig(**CONFIG)
    model = Autoencoder.from_config(config, (input_dim,))
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    b = config.batch_size
    work = []
    for i, layer in enumerate(layers):
        w = layer.weight.detach().clone()  # (out, in)
        x, g = torch.randn(b, w.shape[1]), torch.randn(b, w.shape[0])
        work.append((x, w, g, i > 0))
    resp, codebook = torch.rand(b, config.num_codes), torch.randn(config.num_codes, config.code_dim)
    g_hat = torch.randn(b, config.code_dim)
    params = [p.detach().clone() for p in model.parameters()]
    adam = AdamStep(torch.optim.Adam(params, lr=1e-12, fused=True))  # the training loop's update; a tiny lr
    for p in params:
        p.grad = torch.randn_like(p)

    def one_step():
        for x, w, g, input_grad in work:
            x @ w.t()  # forward
            if input_grad:
                g @ w  # backward to the input (the first layer's input, the data, needs none)
            g.t() @ x  # backward to the weight
        resp @ codebook, g_hat @ codebook.t(), resp.t() @ g_hat  # estimator forward and backward
        if with_adam:
            adam.step()

    for _ in range(20):
        one_step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            one_step()
        best = min(best, (time.perf_counter() - start) / steps)
    return 1000 * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per repeat (default: 300)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats, the best is kept (default: 3)")
    args = parser.parse_args()
    dataset = load_dataset("mnist5k")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; soft_vq MLP 784-500-500-2000-64, "
          "batch 64, K = 128, d = 64")
    if torch.cuda.is_available():
        gpu_ms = ms_per_step(dataset, "cuda", args.steps * 5, args.repeats)
        print(f"GPU ({torch.cuda.get_device_name()}): {1000 / gpu_ms:.0f} steps/s, "
              f"the paper's 40,000 steps in {40_000 * gpu_ms / 1000 / 60:.1f} min")
    step_ms = ms_per_step(dataset, "cpu", args.steps, args.repeats)
    floor_ms = matmul_floor_ms(784, args.steps, args.repeats)
    adam_ms = matmul_floor_ms(784, args.steps, args.repeats, with_adam=True)
    print(f"CPU training step: {step_ms:.2f} ms")
    print(f"CPU matrix multiplies of that step alone: {floor_ms:.2f} ms")
    print(f"for context, those multiplies plus one fused Adam update: {adam_ms:.2f} ms "
          f"(ratio {adam_ms / floor_ms:.2f} before any other work)")
    print(f"ratio step / matmul floor: {step_ms / floor_ms:.2f}")


if __name__ == "__main__":
    main()
