"""Speed of one training step of the paper's MNIST MLP soft VQ-VAE against this machine's floor.

    python benchmarks/train_step.py [--steps 200] [--repeats 5]

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
from vqlib.bottlenecks import SoftVectorQuantizer
from vqlib.model import Autoencoder
from vqlib.optim import AdamStep

CONFIG = dict(dataset="mnist5k", bottleneck="soft_vq", batch_size=64, num_codes=128, code_dim=64, log_every=100,
              checkpoint_every=10**9)


def step_timer(dataset, device: str, steps: int, backward: str = "auto"):
    """A function timing one run of ``steps`` steps of ``vqlib.train`` (ms per step), after a warm-up run."""
    config = RunConfig(**CONFIG, num_iterations=steps, device=device)
    train(config.replace(num_iterations=20), dataset=dataset, progress=False, backward=backward)  # warm-up

    def run() -> float:
        result = train(config, dataset=dataset, progress=False, backward=backward)
        if result.device.type == "cuda":
            torch.cuda.synchronize()
        return 1000 * result.wall_time / steps
    return run


def loop_timer(work, steps: int):
    """After 20 warm-up calls, a function timing ``steps`` calls of ``work`` (ms per call)."""
    for _ in range(20):
        work()

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            work()
        return 1000 * (time.perf_counter() - start) / steps
    return run


def floor_timer(input_dim: int, steps: int, with_adam: bool = False):
    """A function timing ``steps`` repetitions of the matrix multiplies of one forward + backward
    step, and nothing else (``with_adam``: then one fused Adam update of parameters, gradients and
    moments of the model's sizes), in ms per step."""
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

    return loop_timer(one_step, steps)


def estimator_timer(steps: int, fused: bool):
    """A function timing forward + backward of the soft VQ bottleneck alone (batch 64, K = 128, d = 64),
    through its hand-differentiated node (``fused``) or op by op with autograd, in ms per call."""
    torch.manual_seed(0)
    bottleneck = SoftVectorQuantizer(num_codes=CONFIG["num_codes"], code_dim=CONFIG["code_dim"])
    bottleneck.fused = fused
    z_e = torch.randn(CONFIG["batch_size"], CONFIG["code_dim"], requires_grad=True)
    log_sigma = (0.1 * torch.randn(CONFIG["batch_size"], CONFIG["num_codes"])).requires_grad_()
    weights = torch.randn(CONFIG["batch_size"], CONFIG["code_dim"])

    def one_call():
        z_q, aux = bottleneck(z_e, log_sigma)
        ((weights * z_q).sum() + aux["loss"]).backward()
        z_e.grad = log_sigma.grad = bottleneck.codebook.grad = None

    return loop_timer(one_call, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per repeat (default: 200)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats, the best of each is kept (default: 5)")
    args = parser.parse_args()
    dataset = load_dataset("mnist5k")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; soft_vq MLP 784-500-500-2000-64, "
          "batch 64, K = 128, d = 64")
    if torch.cuda.is_available():
        gpu = step_timer(dataset, "cuda", args.steps * 5)
        gpu_ms = min(gpu() for _ in range(args.repeats))
        print(f"GPU ({torch.cuda.get_device_name()}): {1000 / gpu_ms:.0f} steps/s, "
              f"the paper's 40,000 steps in {40_000 * gpu_ms / 1000 / 60:.1f} min")
    # the timings are interleaved, repeat by repeat, so that a busy moment of the machine hits all of them
    timers = {"step": step_timer(dataset, "cpu", args.steps),
              "step, autograd": step_timer(dataset, "cpu", args.steps, backward="autograd"),
              "floor": floor_timer(784, args.steps), "floor + adam": floor_timer(784, args.steps, with_adam=True),
              "estimator": estimator_timer(args.steps, fused=True),
              "estimator, op by op": estimator_timer(args.steps, fused=False)}
    times = {name: [] for name in timers}
    for _ in range(args.repeats):
        for name, timer in timers.items():
            times[name].append(timer())
    best = {name: min(values) for name, values in times.items()}
    floor_ms = best["floor"]
    print(f"CPU training step: {best['step']:.2f} ms "
          f"(autograd through the whole model: {best['step, autograd']:.2f} ms, "
          f"ratio {best['step, autograd'] / floor_ms:.2f})")
    print(f"the soft VQ bottleneck alone, forward + backward: {best['estimator']:.2f} ms "
          f"(op by op with autograd: {best['estimator, op by op']:.2f} ms)")
    print(f"CPU matrix multiplies of that step alone: {floor_ms:.2f} ms")
    print(f"for context, those multiplies plus one fused Adam update: {best['floor + adam']:.2f} ms "
          f"(ratio {best['floor + adam'] / floor_ms:.2f} before any other work)")
    print(f"ratio step / matmul floor: {best['step'] / floor_ms:.2f}")


if __name__ == "__main__":
    main()
