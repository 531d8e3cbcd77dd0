"""The soft VQ-VAE's choices that the paper leaves open, as the factors of an experiment.

The paper fixes the model (eq. 4-7, 27) but not five choices that change what it learns:

- ``recipe``: the loss and batch. *paper*: Bernoulli log-likelihood, latent terms summed over d
  (eq. 27), weight 1, batch 32. *published*: the authors' notebook, MSE divided by the data
  variance + 3 (codebook + 2.5 commitment) as element means, batch 64.
- ``formula``: eq. 5-7 (*paper*) or the notebook's sigma^(+1) weights (*published*).
- ``sigma_source``: where sigma_k comes from: an *encoder* head of width K, one learned sigma per
  *codeword*, or one *shared* sigma.
- ``noise``: the training noise on z_e: *none*, *fixed* std, or std *proportional* to the spread of z_e.
- ``num_codes``: K.

An *arm* is one setting of the factors for one model: a dict such as ``{"model": "soft_vq",
"recipe": "published", "formula": "paper", "sigma_source": "encoder", "noise": "fixed",
"num_codes": 128}``. Controls are the models without the estimator under the same recipe: ``ae``,
``noisy_ae`` (the autoencoder with the same latent noise) and the hard ``vq``; a control arm
carries only the factors that apply to it. :func:`arm_config` turns an arm into a
:class:`~vqlib.config.RunConfig`; :func:`design` lists the arms of a one-at-a-time or a full
factorial design.
"""

from __future__ import annotations

import itertools

from .config import RunConfig
from .validation import check_choice

#: what each level sets in RunConfig (beta None: the bottleneck's own default, 2.5 for soft_vq)
RECIPES = {
    "paper": dict(reconstruction="bernoulli", latent_weight=1.0, beta=None, reduction="sum", batch_size=32),
    "published": dict(reconstruction="nmse", latent_weight=3.0, beta=2.5, reduction="mean", batch_size=64),
}
NOISES = ("none", "fixed", "proportional")
FACTORS = {
    "recipe": tuple(RECIPES),
    "formula": ("paper", "published"),
    "sigma_source": ("encoder", "codeword", "shared"),
    "noise": NOISES,
    "num_codes": None,  # any K >= 2
}
#: the factors each model of an arm reads; the others are left out of its arms
MODEL_FACTORS = {
    "soft_vq": tuple(FACTORS),
    "ae": ("recipe", "noise"),  # noise "none": ae, otherwise noisy_ae
    "vq": ("recipe", "num_codes"),
}
MODELS = tuple(MODEL_FACTORS)


def check_level(factor: str, level):
    """A factor's level, checked: an unknown factor or level is an error that names what is allowed."""
    if factor not in FACTORS:
        raise ValueError(f"factor {factor!r} does not exist: the factors are {', '.join(map(repr, FACTORS))}")
    if factor == "num_codes":
        if isinstance(level, bool) or not isinstance(level, int) or level < 2:
            raise ValueError(f"num_codes={level!r} is not allowed: K must be an integer >= 2")
        return level
    return check_choice(factor, level, FACTORS[factor])


def arm_config(arm: dict, base: RunConfig | None = None, noise_std: float = 0.1) -> RunConfig:
    """The RunConfig of ``arm`` (see the module docstring) on top of ``base``; ``noise_std`` is the
    std of a *fixed* noise, or the factor of a *proportional* one."""
    base = base or RunConfig()
    model = check_choice("model", arm.get("model"), MODELS)
    extra = sorted(set(arm) - {"model", *MODEL_FACTORS[model]})
    if extra:
        raise ValueError(f"arm {arm!r}: {model} does not read {', '.join(extra)}; its factors are "
                         f"{', '.join(MODEL_FACTORS[model])}")
    levels = {factor: check_level(factor, level) for factor, level in arm.items() if factor != "model"}
    changes = dict(RECIPES[levels.get("recipe", "paper")])
    noise = levels.get("noise", "none")
    bottleneck = "noisy_ae" if model == "ae" and noise != "none" else model
    changes.update(bottleneck=bottleneck, noise_std=0.0 if noise == "none" else noise_std,
                   noise_scale="proportional" if noise == "proportional" else "fixed")
    for factor in ("formula", "sigma_source", "num_codes"):
        if factor in levels:
            changes[factor] = levels[factor]
    return base.replace(**changes)


def design(levels: dict, kind: str = "one_at_a_time") -> list[dict]:
    """The soft VQ-VAE arms of a design over ``levels`` ({factor: [level, ...]}; every factor of
    :data:`FACTORS` must be given, its first level being the centre).

    ``"one_at_a_time"``: the centre, then each other level of each factor with the rest at the centre
    (1 + sum (n_f - 1) arms). ``"factorial"``: every combination (prod n_f arms).
    """
    check_choice("kind", kind, ("one_at_a_time", "factorial"))
    for factor in levels:
        if factor not in FACTORS:
            check_level(factor, None)  # raises, naming the factors
    missing = [f for f in FACTORS if f not in levels]
    if missing:
        raise ValueError(f"levels lacks {', '.join(missing)}: give at least one level of every factor")
    checked = {}
    for factor in FACTORS:
        values = [check_level(factor, level) for level in levels[factor]]
        if not values or len(set(values)) != len(values):
            raise ValueError(f"{factor}={levels[factor]!r}: give one or more distinct levels")
        checked[factor] = values
    if kind == "factorial":
        return [{"model": "soft_vq", **dict(zip(checked, combo))} for combo in itertools.product(*checked.values())]
    centre = {"model": "soft_vq", **{factor: values[0] for factor, values in checked.items()}}
    arms = [centre]
    for factor, values in checked.items():
        arms += [{**centre, factor: level} for level in values[1:]]
    return arms


def control_of(arm: dict, model: str) -> dict:
    """The arm of control ``model`` (``ae`` or ``vq``) that matches ``arm`` in the factors it reads."""
    check_choice("model", model, ("ae", "vq"))
    return {"model": model, **{factor: arm[factor] for factor in MODEL_FACTORS[model] if factor in arm}}


def label(arm: dict, centre: dict | None = None) -> str:
    """A short name: the model, then the factors (only those that differ from ``centre``, if given)."""
    shown = [(f, v) for f, v in arm.items() if f != "model" and (centre is None or centre.get(f) != v)]
    model = "noisy_ae" if arm["model"] == "ae" and arm.get("noise", "none") != "none" else arm["model"]
    return model + "".join(f" · {f}={v}" for f, v in shown)


def effects(frame, metric: str, centre: dict) -> list[dict]:
    """The effect of each factor on ``metric``: from its ``centre`` level to each other level present.

    ``frame`` (a pandas DataFrame) has one row per soft VQ-VAE run, with the factors of
    :data:`FACTORS`, ``seed`` and ``metric``. An arm is compared with the arm that differs from it in
    that factor alone (in a one-at-a-time design, the centre; in a factorial, every such pair),
    seed by seed; the per-seed mean over those pairs gives the seed-paired t interval of
    :func:`vqlib.evaluation.paired_difference`. One row per (factor, level): ``factor``, ``level``,
    ``centre``, ``arm_pairs`` and the interval's ``difference``, ``low``, ``high``, ``shown``, ``pairs``.
    """
    from .evaluation import paired_difference

    rows = []
    for factor in FACTORS:
        others = [f for f in FACTORS if f != factor] + ["seed"]
        reference = frame[frame[factor] == centre[factor]].set_index(others)[metric].rename("centre")
        for level in [v for v in dict.fromkeys(frame[factor]) if v != centre[factor]]:
            changed = frame[frame[factor] == level].set_index(others)[metric].rename("level")
            joined = reference.to_frame().join(changed, how="inner")
            if joined.empty:
                continue
            per_seed = joined.groupby(level="seed").mean()
            arm_pairs = len(joined.reset_index().drop(columns="seed").drop_duplicates(subset=others[:-1]))
            rows.append({"factor": factor, "level": level, "centre": centre[factor], "arm_pairs": arm_pairs,
                         **paired_difference(per_seed["level"].to_numpy(), per_seed["centre"].to_numpy())})
    return rows
