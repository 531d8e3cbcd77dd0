"""What a soft VQ-VAE's estimator is doing: which codeword wins, how sure it is, and why.

Eq. 7's log-weights are -||z - mu_k||^2 / (2 sigma_k^2) - d log sigma_k: a distance term and a
normaliser term. When the sigmas differ across codewords by a factor s, the normaliser differs by
d log s nats (at d = 64 and s = 1.1, 6 nats), which can outweigh the distances, so the most probable
codeword need not be the nearest one. :func:`soft_vq_diagnostics` measures this for a batch of
codes; :func:`model_diagnostics` for a trained model on a dataset's test split.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .bottlenecks import (SoftVectorQuantizer, code_counts, log_responsibilities, perplexity_from_counts,
                          published_responsibilities, squared_distances)


@torch.no_grad()
def soft_vq_diagnostics(bottleneck: SoftVectorQuantizer, z_e: torch.Tensor, extra: torch.Tensor | None = None) -> dict:
    """Diagnostics of eq. 5-7 for codes ``z_e`` (N, d) (noise-free) and the encoder's ``extra`` head.

    share_nearest: inputs whose most probable codeword is their nearest one; share_smallest_sigma:
    ... is the codeword with the smallest sigma for that input; responsibility_entropy (nats) and
    max_responsibility, averaged over inputs; sigma_spread_codewords: std over codewords of log sigma,
    averaged over inputs; sigma_spread_inputs: std over inputs of log sigma, averaged over codewords;
    normaliser_spread / distance_spread: the range over codewords of d log sigma_k and of
    ||z - mu_k||^2 / (2 sigma_k^2), averaged over inputs (nats); z_norm: mean ||z_e||; noise_norm:
    s sqrt(d), the typical norm of the training noise of std s (noise_std, times the spread of
    these z_e when the noise is proportional); perplexity: of the most probable codes.
    """
    if not isinstance(bottleneck, SoftVectorQuantizer):
        raise ValueError(f"bottleneck is a {type(bottleneck).__name__}: these diagnostics are for soft_vq")
    bottleneck.check_input(z_e, extra)
    n, d = z_e.shape
    proportional = bottleneck.noise_scale == "proportional"
    log_sigma = extra if bottleneck.sigma_source == "encoder" else bottleneck.log_sigma.expand(n, -1)  # (N, K)
    distances = squared_distances(z_e, bottleneck.codebook)  # (N, K)
    if bottleneck.formula == "paper":
        responsibilities = log_responsibilities(z_e, bottleneck.codebook, log_sigma).exp()
    else:
        responsibilities = published_responsibilities(z_e, bottleneck.codebook, log_sigma)
    most_probable = responsibilities.argmax(-1)
    scaled = distances * torch.exp(-2 * log_sigma) / 2
    normaliser = d * log_sigma
    entropy = -(responsibilities * torch.log(responsibilities.clamp_min(1e-300))).sum(-1)
    return {
        "share_nearest": float((most_probable == distances.argmin(-1)).double().mean()),
        "share_smallest_sigma": float((most_probable == log_sigma.argmin(-1)).double().mean()),
        "responsibility_entropy": float(entropy.mean()),
        "max_responsibility": float(responsibilities.max(-1).values.mean()),
        "sigma_spread_codewords": float(log_sigma.std(-1).mean()) if log_sigma.shape[-1] > 1 else 0.0,
        "sigma_spread_inputs": float(log_sigma.std(0).mean()) if n > 1 else 0.0,
        "normaliser_spread": float((normaliser.max(-1).values - normaliser.min(-1).values).mean()),
        "distance_spread": float((scaled.max(-1).values - scaled.min(-1).values).mean()),
        "z_norm": float(z_e.norm(dim=-1).mean()),
        "noise_norm": float(bottleneck.noise_std) * math.sqrt(d) * (float(z_e.std(0).mean()) if proportional else 1.0),
        "perplexity": float(perplexity_from_counts(code_counts(most_probable, bottleneck.num_codes))),
    }


@torch.no_grad()
def model_diagnostics(model, dataset, batch_size: int = 1000) -> dict:
    """:func:`soft_vq_diagnostics` of a trained soft VQ-VAE on ``dataset``'s test split."""
    model.eval()
    device = next(model.parameters()).device
    heads = [model.encode_heads(dataset.x_test[i:i + batch_size].to(device))
             for i in range(0, len(dataset.x_test), batch_size)]
    z_e = torch.cat([h[0] for h in heads])
    extra = torch.cat([h[1] for h in heads]) if heads[0][1] is not None else None
    return soft_vq_diagnostics(model.bottleneck, z_e, extra)


def diagnostics_over_training(configs, steps, dataset) -> list[dict]:
    """:func:`model_diagnostics` of soft VQ-VAEs at each of ``steps`` of their training.

    The runs of ``configs`` (one batch of :func:`vqlib.training.train_many`) train to each step in
    turn, resuming exactly from their checkpoints in a temporary folder, so each row is the model that
    a run of that many steps would be. Returns one row per run and step: ``run`` (its index in
    ``configs``), ``step`` and the diagnostics; step 0 is the initialisation.
    """
    import tempfile

    from .model import Autoencoder
    from .training import train_many
    from .utils import set_seed

    steps = sorted(set(int(s) for s in steps))
    if not steps or steps[0] < 0:
        raise ValueError(f"steps={steps!r} is not allowed: give training steps >= 0")
    rows = []
    with tempfile.TemporaryDirectory(prefix="vqlib-diagnostics-") as folder:
        out_dirs = [Path(folder) / str(i) for i in range(len(configs))]
        for step in steps:
            if step == 0:  # the initial weights, as training draws them from each run's seed
                models = []
                for config in configs:
                    set_seed(config.seed)
                    models.append(Autoencoder.from_config(config, dataset.input_shape).to(dataset.x_test.device))
            else:
                staged = [c.replace(num_iterations=step, checkpoint_every=step) for c in configs]
                models = [r.model for r in train_many(staged, out_dirs, dataset=dataset, progress=False)]
            rows += [{"run": i, "step": step, **model_diagnostics(m, dataset)} for i, m in enumerate(models)]
    return rows


def loss_still_falling(history: list, fraction: float = 0.2) -> dict:
    """How much a run's logged loss still fell over the last ``fraction`` of its steps.

    Returns ``drop`` (loss at the start of that stretch minus the last logged loss; > 0: still
    falling), ``relative`` (the drop as a share of the whole fall since the first logged loss; NaN when
    fewer than two points were logged) and ``steps`` (the length of the stretch).

    A small relative drop does *not* say that a model has stopped learning what a page reports: the
    whole fall is dominated by the first steps from random weights, so a loss that still falls by a
    constant amount per doubling of steps shows a few per cent here, and ACC or NMI can keep moving
    long after (``tests/test_evaluation_over_training.py``). Judge convergence on the reported metrics
    with :func:`vqlib.convergence.convergence`.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction!r} is not allowed: give a number in (0, 1)")
    points = [(h["step"], h["loss"]) for h in history if math.isfinite(h["loss"])]
    if len(points) < 2:
        return {"drop": math.nan, "relative": math.nan, "steps": 0}
    last_step, last = points[-1]
    start = last_step - fraction * last_step
    before = [loss for step, loss in points if step <= start] or [points[0][1]]
    drop, fall = before[-1] - last, points[0][1] - last
    return {"drop": drop, "relative": drop / fall if fall > 0 else math.nan, "steps": last_step - start}
