"""Information measures of a discrete code, in nats (vib-on-vq-vae.txt, eq. 13-28).

An encoder with a codebook of K codewords assigns input i the distribution p(z | i) over codes
(one-hot for the hard VQ-VAE, eq. 27; the softmax of eq. 28 for EM; eq. 7 for the soft VQ-VAE).
Over N inputs, with p(i) = 1/N:

* the code distribution (aggregate posterior) p(z) = (1/N) sum_i p(z | i);
* its entropy H(Z), the rate of the deterministic IB (eq. 19);
* the mean conditional entropy E_i H(p(z | i)) = H(Z | I);
* the mutual information I(I; Z) = H(Z) - H(Z | I), the rate of the IB (eq. 13);
* with the uniform prior r(z) = 1/K: the cross entropy H(p(Z|I), r) = log K for every encoder
  (eq. 25: why the VDIB term drops out of the VQ-VAE loss), and the VIB's KL(p(Z|I) || r) =
  log K - H(Z | I) (eq. 26), which differs from log K by the conditional entropy;
* KL(p(z) || r) = log K - H(Z): how far code usage is from uniform; exp H(Z) is the perplexity.

``responsibilities`` is an (N, K) array of rows p(z | i); every function checks it.

Like against like: a soft encoder (EM, soft VQ) can be read two ways, by its soft rows p(z | i) or
by the hard assignment argmax_z p(z | i); :func:`hard_and_soft` measures any encoder both ways,
so that EM and VQ are compared with one estimator (for the hard VQ-VAE the two readings agree).
:func:`vib_loss` is eq. 18 itself: the expected distortion under p(z | i) plus beta KL(p(Z|I) || r).
"""

from __future__ import annotations

import math

import numpy as np


def _rows(responsibilities) -> np.ndarray:
    p = np.asarray(responsibilities.detach().cpu() if hasattr(responsibilities, "detach") else responsibilities,
                   dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or p.shape[0] < 1:
        raise ValueError(f"responsibilities has shape {p.shape}: give an (N, K) array with N >= 1 inputs and "
                         "K >= 2 codes")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("responsibilities is not allowed: every row must be a probability distribution "
                         "(finite, >= 0, summing to 1)")
    return p


def entropy(p, axis: int = -1) -> np.ndarray:
    """-sum p log p along ``axis`` (0 log 0 = 0), in nats."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis)


def code_distribution(responsibilities) -> np.ndarray:
    """p(z) = (1/N) sum_i p(z | i), shape (K,)."""
    return _rows(responsibilities).mean(0)


def conditional_entropy(responsibilities) -> float:
    """H(Z | I) = (1/N) sum_i H(p(z | i)): 0 for a deterministic (one-hot) encoder."""
    return float(entropy(_rows(responsibilities), axis=1).mean())


def mutual_information(responsibilities) -> float:
    """I(I; Z) = H(Z) - H(Z | I), with p(i) uniform over the N inputs."""
    p = _rows(responsibilities)
    return float(entropy(p.mean(0)) - entropy(p, axis=1).mean())


def information_terms(responsibilities) -> dict:
    """Every measure of the module for one encoder: a dict of floats (nats, and the perplexity)."""
    p = _rows(responsibilities)
    k = p.shape[1]
    marginal = p.mean(0)
    h_z, h_z_given_i = float(entropy(marginal)), float(entropy(p, axis=1).mean())
    return {
        "log_K": math.log(k),  # = H(p(Z|I), r) for the uniform r, every encoder (eq. 25)
        "H(Z)": h_z,
        "H(Z|I)": h_z_given_i,
        "I(I;Z)": h_z - h_z_given_i,
        "KL(p(Z|I)||r)": math.log(k) - h_z_given_i,  # the VIB rate with the uniform r (eq. 26)
        "KL(p(Z)||r)": math.log(k) - h_z,  # code usage against uniform
        "perplexity": math.exp(h_z),
        "dead_codes": k - len(np.unique(p.argmax(1))),  # codes that are no input's most probable code
        # codes holding at least one input's worth of mass, N p(z) >= 1 (for one-hot rows: the codes used)
        "codes_used": int((len(p) * marginal >= 1 - 1e-9).sum()),
    }


HARD_AND_SOFT = ("H(Z)", "H(Z|I)", "I(I;Z)", "perplexity", "codes_used")  # the measures read both ways


def hard_and_soft(responsibilities) -> dict:
    """:data:`HARD_AND_SOFT` measured on the hard assignment argmax_z p(z | i) (keys ``..._hard``) and on
    the rows p(z | i) themselves (``..._soft``), side by side, for one encoder.

    Hard: the code usage a decoder fed the most probable codeword sees (H(Z | I) = 0 by construction).
    Soft: the encoder's own distribution, the rate of eq. 13-15. For one-hot rows the two agree.
    """
    p = _rows(responsibilities)
    hard = information_terms(hard_responsibilities(p.argmax(1), p.shape[1]))
    soft = information_terms(p)
    return {**{f"{key}_hard": hard[key] for key in HARD_AND_SOFT},
            **{f"{key}_soft": soft[key] for key in HARD_AND_SOFT}}


def hard_responsibilities(indices, num_codes: int) -> np.ndarray:
    """One-hot rows p(z | i) for a deterministic encoder's code ``indices`` (N,)."""
    indices = np.asarray(indices)
    if num_codes < 2:
        raise ValueError(f"num_codes={num_codes!r} is not allowed: K must be >= 2")
    rows = np.zeros((len(indices), num_codes))
    rows[np.arange(len(indices)), indices] = 1.0
    return rows


def _encoder_rows(bottleneck, aux) -> np.ndarray:
    """p(z | i) of one batch from a quantizer's ``aux``: its responsibilities, or one-hot rows of its indices."""
    if "responsibilities" in aux:
        return aux["responsibilities"].double().cpu().numpy()
    return hard_responsibilities(aux["indices"].cpu().numpy(), bottleneck.num_codes)


def _check_quantizer(model, what: str, names: str = "vq, soft_vq or em_vq"):
    if not model.bottleneck.num_codes:
        raise ValueError(f"{type(model.bottleneck).__name__} has no codebook: {what} need {names}")


def measure(model, dataset, batch_size: int = 1000) -> dict:
    """The measures of :func:`information_terms` for a trained quantizer on ``dataset``'s test split,
    with its distortion E ||z_e - z_q||^2 and its reconstruction -log p(x | z_q) (nats per image).

    p(z | i): one-hot at the nearest codeword for ``vq`` (eq. 27), the softmax of eq. 28 for
    ``em_vq``, the posterior of eq. 7 for ``soft_vq``; computed in evaluation mode (no noise).
    The keys of :func:`information_terms` read p(z | i) as the model defines it (soft rows for EM, one-hot
    for VQ: two different estimators); the ``..._hard`` and ``..._soft`` keys of :func:`hard_and_soft`
    read every model both ways, so compare models column by column.
    """
    import torch

    from .losses import reconstruction_loss

    _check_quantizer(model, "information terms")
    bottleneck = model.bottleneck
    device = next(model.parameters()).device
    model.eval()
    rows, distortion, recon, n = [], 0.0, 0.0, len(dataset.x_test)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            x = dataset.x_test[start:start + batch_size].to(device)
            z_e, extra = model.encode_heads(x)
            z_q, aux = bottleneck(z_e, extra)
            rows.append(_encoder_rows(bottleneck, aux))
            distortion += float((z_e - z_q).pow(2).sum())
            recon += float(reconstruction_loss(model.decode(z_q, x), x, "bernoulli")) * len(x)
    rows = np.concatenate(rows)
    return {**information_terms(rows), **hard_and_soft(rows), "distortion": distortion / n, "reconstruction": recon / n}


def vib_loss(model, x, beta: float = 1.0, batch_size: int = 500) -> dict:
    """L_VIB of eq. 18 for a trained ``vq`` or ``em_vq`` model on images ``x`` (N, ...), in nats per image:

        L_VIB = (1/N) sum_i sum_k p(k | i) [-log q(x_i | mu_k)] + beta KL(p(Z|I) || r),
        KL(p(Z|I) || r) = log K - H(Z|I)  (r uniform, eq. 26),

    where q(x_i | mu_k) is the decoder's Bernoulli likelihood of x_i given codeword mu_k as its input,
    and p(k | i) the model's own encoder: one-hot at the nearest codeword for ``vq`` (eq. 27), the
    softmax of eq. 28 (at the model's temperature) for ``em_vq``. Returns ``distortion``, ``rate``
    (the KL), ``beta`` and ``L_VIB`` = distortion + beta * rate. ``soft_vq`` is refused: its decoder
    receives the posterior mean z_hat, never a codeword, so eq. 18's q(x | z) is not what it decodes.
    """
    import torch

    from .bottlenecks import EMVectorQuantizer, VectorQuantizer
    from .posterior import negative_log_likelihood

    _check_quantizer(model, "L_VIB", "vq or em_vq")
    bottleneck = model.bottleneck
    if not isinstance(bottleneck, (VectorQuantizer, EMVectorQuantizer)):
        raise ValueError(f"{type(bottleneck).__name__}'s decoder does not receive a codeword: L_VIB (eq. 18) is "
                         "computed for vq and em_vq")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
        raise ValueError(f"beta={beta!r} is not allowed: beta must be a number >= 0")
    device = next(model.parameters()).device
    model.eval()
    rows, distortion = [], 0.0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device)
            p = _encoder_rows(bottleneck, bottleneck(*model.encode_heads(xb))[1])  # (b, K)
            rows.append(p)
            for k in np.flatnonzero(p.sum(0) > 0):  # the codewords some input of the batch can be given
                codeword = bottleneck.codebook[k].expand(len(xb), -1)
                nll = negative_log_likelihood(model, xb, codeword).double().cpu().numpy()  # -log q(x_i | mu_k)
                distortion += float(p[:, k] @ nll)
    terms = information_terms(np.concatenate(rows))
    distortion /= len(x)
    rate = terms["KL(p(Z|I)||r)"]
    return {"distortion": distortion, "rate": rate, "beta": float(beta), "L_VIB": distortion + beta * rate}
