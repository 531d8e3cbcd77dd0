"""Speed of training the paper's MNIST MLP soft VQ-VAE, one run and many runs at once, against this machine's floor.

    python benchmarks/train_step.py [--steps 100] [--repeats 3] [--runs 8,32]

Prints, from one run with the timings interleaved repeat by repeat (so that a busy moment of the
machine hits all of them alike), milliseconds per run-step of ``vqlib.train_many`` (batch 64,
K = 128, d = 64, the library's real loop on in-memory mnist5k) with one run and with R runs
stacked, in ``precision="fp32"`` and, where the CPU multiplies bf16 natively, ``"bf16"``; and the
matrix-multiply floor of one run-step in each precision: every dense layer's forward x @ W^T and
backward g^T @ x, g @ W except for the first layer, whose input needs no gradient, plus the
estimator's responsibilities @ codebook (always fp32, as in training), with nothing else. Its
last two lines are the ratio of the bf16 to the fp32 per-run step at the first R, and the ratio of
the batched per-run step at the first R to the floor of the same precision (bf16 where it ran).
Before them: the vmapped MLP with weights stored (in, out), as ``vqlib.networks.Dense`` does,
against nn.Linear's (out, in). Where a GPU is available it also reports the per-run step there,
in each precision it runs natively, and the time for the paper's 40,000 steps.

``torch.compile`` of the stacked step is not measured here: compiling ``_Stack.loss_fn`` (vmap over
functional_call) took 405 s on this project's 2-core CPU and the compiled step was slower than
the eager one (see the README, "Speed").
"""

from __future__ import annotations

import argparse
import time

import torch

from vqlib import RunConfig, load_dataset
from vqlib.model import Autoencoder
from vqlib.networks import Dense
from vqlib.precision import bf16_native
from vqlib.training import train_many

CONFIG = dict(dataset="mnist5k", bottleneck="soft_vq", batch_size=64, num_codes=128, code_dim=64, log_every=100,
              checkpoint_every=10**9)


def step_timer(dataset, device: str, steps: int, runs: int, precision: str = "fp32"):
    """A function timing ``steps`` steps of ``train_many`` over ``runs`` seeds (ms per run-step), after a warm-up."""
    configs = [RunConfig(**CONFIG, num_iterations=steps, device=device, seed=seed, precision=precision)
               for seed in range(runs)]
    train_many([c.replace(num_iterations=10) for c in configs], dataset=dataset, progress=False)  # warm-up

    def run() -> float:
        start = time.perf_counter()
        train_many(configs, dataset=dataset, progress=False)
        if device == "cuda":
            torch.cuda.synchronize()
        return 1000 * (time.perf_counter() - start) / steps / runs
    return run


def floor_timer(input_dim: int, steps: int, precision: str = "fp32"):
    """A function timing the matrix multiplies of one run's forward + backward step, and nothing else (ms):
    the dense layers' in ``precision``'s dtype, the estimator's in float32 (as under bf16 autocast)."""
    config = RunConfig(**CONFIG)
    model = Autoencoder.from_config(config, (input_dim,))
    layers = [m for m in model.modules() if isinstance(m, Dense)]
    b = config.batch_size
    work = []
    for i, layer in enumerate(layers):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        w = layer.weight.detach().t().contiguous().to(dtype)  # (out, in), nn.Linear's layout for the plain mm floor
        work.append((torch.randn(b, w.shape[1], dtype=dtype), w, torch.randn(b, w.shape[0], dtype=dtype), i > 0))
    resp, codebook = torch.rand(b, config.num_codes), torch.randn(config.num_codes, config.code_dim)
    g_hat = torch.randn(b, config.code_dim)

    def one_step():
        for x, w, g, input_grad in work:
            x @ w.t()  # forward
            if input_grad:
                g @ w  # backward to the input (the first layer's input, the data, needs none)
            g.t() @ x  # backward to the weight
        resp @ codebook, g_hat @ codebook.t(), resp.t() @ g_hat  # estimator forward and backward

    return loop_timer(one_step, steps)


def loop_timer(one_step, steps: int, runs: int = 1):
    """After 3 warm-up calls, a function timing ``steps`` calls of ``one_step`` (ms per call and run)."""
    for _ in range(3):
        one_step()

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            one_step()
        return 1000 * (time.perf_counter() - start) / steps / runs
    return run


def layout_timer(runs: int, steps: int, layout: str):
    """A function timing forward + backward of the paper's MLP (encoder and decoder) under
    ``torch.func.vmap`` over ``runs`` stacked runs, with weights stored (in, out) as
    ``vqlib.networks.Dense`` does, or (out, in) as ``nn.Linear`` does (ms per run-step): the
    measurement behind Dense's layout."""
    from torch.func import vmap

    sizes, b = [784, 500, 500, 2000, 64, 2000, 500, 500, 784], CONFIG["batch_size"]
    shapes = [(i, o) if layout == "in, out" else (o, i) for i, o in zip(sizes[:-1], sizes[1:])]
    weights = [(0.01 * torch.randn(runs, *shape)).requires_grad_() for shape in shapes]
    biases = [torch.zeros(runs, o, requires_grad=True) for o in sizes[1:]]
    x = torch.rand(runs, b, sizes[0])

    def one_run(weights, biases, x):
        h = x
        for i, (w, bias) in enumerate(zip(weights, biases)):
            h = torch.addmm(bias, h, w) if layout == "in, out" else torch.nn.functional.linear(h, w, bias)
            h = h.relu() if i < len(weights) - 1 else h
        return h.square().mean()

    def one_step():
        vmap(one_run)(weights, biases, x).sum().backward()
        for t in weights + biases:
            t.grad = None

    return loop_timer(one_step, steps, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="timed steps per repeat (default: 100)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats, the best of each is kept (default: 3)")
    parser.add_argument("--runs", default="8,32", help="numbers of runs trained together (default: 8,32)")
    parser.add_argument("--threads", type=int, default=0, help="torch's CPU threads (default: 0, torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(r) for r in args.runs.split(",")]
    dataset = load_dataset("mnist5k")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; soft_vq MLP 784-500-500-2000-64, "
          "batch 64, K = 128, d = 64")
    if torch.cuda.is_available():
        for precision in ("fp32", "bf16") if bf16_native("cuda") else ("fp32",):
            gpu = {r: step_timer(dataset, "cuda", args.steps * 5, r, precision) for r in [1, *sizes]}
            best = {r: min(timer() for _ in range(args.repeats)) for r, timer in gpu.items()}
            for r, ms in best.items():
                print(f"GPU ({torch.cuda.get_device_name()}), {precision}, R = {r}: {ms:.3f} ms per run-step "
                      f"({best[1] / ms:.1f}x one run); 40,000 steps of {r} runs in {40_000 * ms * r / 1000 / 60:.1f} min")
    precisions = ("fp32", "bf16") if bf16_native("cpu") else ("fp32",)
    timers = {}
    for p in precisions:
        timers[f"one run, {p}"] = step_timer(dataset, "cpu", args.steps, 1, p)
        timers.update({f"R = {r}, {p}": step_timer(dataset, "cpu", max(args.steps // 4, 20), r, p) for r in sizes})
        timers[f"floor, {p}"] = floor_timer(784, args.steps, p)
    timers["mlp, (in, out)"] = layout_timer(sizes[0], max(args.steps // 10, 5), "in, out")
    timers["mlp, (out, in)"] = layout_timer(sizes[0], max(args.steps // 10, 5), "out, in")
    times = {name: [] for name in timers}
    for _ in range(args.repeats):
        for name, timer in timers.items():
            times[name].append(timer())
    best = {name: min(values) for name, values in times.items()}
    for p in precisions:
        floor_ms, one = best[f"floor, {p}"], best[f"one run, {p}"]
        print(f"CPU training step, {p}, one run: {one:.2f} ms (ratio to the {p} floor {one / floor_ms:.2f})")
        for r in sizes:
            ms = best[f"R = {r}, {p}"]
            print(f"CPU batched step, {p}, R = {r}: {ms:.2f} ms per run-step ({one / ms:.2f}x one run)")
        print(f"CPU matrix multiplies of one run-step alone (the {p} floor): {floor_ms:.2f} ms")
    inout, outin = best["mlp, (in, out)"], best["mlp, (out, in)"]
    print(f"vmapped MLP forward + backward, R = {sizes[0]}: weights (in, out) {inout:.2f} ms per run-step, "
          f"(out, in) {outin:.2f} ms (ratio {outin / inout:.2f})")
    r, p = sizes[0], precisions[-1]
    if "bf16" in precisions:
        print(f"bf16 / fp32 per-run step (R={r}): {best[f'R = {r}, bf16'] / best[f'R = {r}, fp32']:.2f}")
    else:
        print(f"bf16 / fp32 per-run step (R={r}): not measured (this CPU has no native bf16)")
    print(f"batched per-run step (R={r}) / matmul floor: {best[f'R = {r}, {p}'] / best[f'floor, {p}']:.2f} ({p})")


if __name__ == "__main__":
    main()
