"""What every notebook of the book does around its own content: check parameters, record provenance.

    session = notebook.start(globals())                 # first line of the set-up cell, after the imports
    layers = session.values["layers"]                   # a list parameter, parsed: "0,2,4,8" -> [0, 2, 4, 8]
    notebook.start(globals(), rules={"num_codes": integer(maximum=10)})  # a rule of this page's own
    ...
    notebook.save_table(frame, session, "downstream")   # results are data: CSV + JSON next to the page
    notebook.finish(session)                            # shows parameters, commit, versions, device, wall time

A page's parameters are the plain scalars of its papermill ``parameters`` cell; :func:`start` finds
them in the page's namespace and checks each against :data:`RULES`, the one table of what every
parameter of the book allows.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from .bottlenecks import BOTTLENECKS
from .config import RunConfig
from .factors import FACTORS
from .precision import resolve_precision
from .utils import atomic_write_bytes, atomic_write_json, provenance, resolve_device, set_seed
from .validation import (check_number, flag, integer, integers, number, numbers, one_of, some_of, text,
                         widths)

#: The book's parameter sets: ``default`` is each page's parameters cell, the others are in notebooks/params/:
# default: the book (a 2-core CPU, 30 minutes in all); smoke: CI, seconds a page; full: hours of a CPU for the
# pages that define one (the others run their default); paper: the papers' protocols, on a GPU
PARAM_SETS = ("default", "smoke", "full", "paper")

__all__ = ["PARAM_SETS", "RULES", "Session", "check_parameters", "claim_list", "finish", "interval", "page_parameters",
           "save_json", "save_table", "seed_paired", "seed_summary", "start"]


def _beta_or_default(name, value):
    if value == -1 and not isinstance(value, bool):
        return -1.0
    try:
        return check_number(name, value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not allowed: give a number >= 0, or -1 for the bottleneck's own "
                         "default") from None


def _fraction(name, value):
    """A number in (0, 1]."""
    value = check_number(name, value, strict=True)
    if value > 1:
        raise ValueError(f"{name}={value!r} is not allowed: {name} must be a number in (0, 1]")
    return value


#: What each parameter of the book's pages allows, by name: one name means one thing on every page.
#: A rule is ``rule(name, value) -> value`` (see :mod:`vqlib.validation`); list rules return the parsed list.
RULES = {
    # every page
    "param_set": one_of(PARAM_SETS),
    "results_dir": text(),  # where the page's tables and provenance.json go
    "runs_dir": text(),  # run folders of trained models, shared between pages
    "seed": integer(minimum=0),
    # RunConfig's fields with a list of choices: dataset, bottleneck, sigma, gradient, formula, reduction,
    # reconstruction, device, ...
    **{f.name: one_of(f.metadata["choices"]) for f in fields(RunConfig) if f.metadata["choices"]},
    # models and training (RunConfig checks them again when a page builds its configs)
    "models": some_of(BOTTLENECKS),  # "ae,vq": distinct bottlenecks, one row or curve each
    "mlp_hidden": widths(),  # "500-500-2000"
    "code_dim": integer(),
    "num_codes": integer(minimum=2),  # K: one codeword carries no information
    "num_codes_vq": integer(minimum=2),
    "num_codes_soft_vq": integer(minimum=2),
    "num_codes_em_vq": integer(minimum=2),
    "num_codes_grid": integers(minimum=2),  # K values of a grid: "16,64,128"
    "compare_codes": integer(minimum=2),  # one K of num_codes_grid
    "vib_beta": number(),  # page 08: beta of L_VIB (eq. 18), the weight of KL(p(Z|I) || r)
    "beta": _beta_or_default,
    "beta_vae_beta": number(),
    "betas": numbers(minimum=0),  # "0.1,0.2": KL weights, each > 0
    "noise_std": number(),
    "latent_weight": number(),
    "free_bits": number(),
    "pixelcnn_channels": integer(),
    "layers": integers(minimum=0),  # "0,2,4,8": PixelCNN layers L
    "quantizer_layers": integers(minimum=0),
    "samples": integers(minimum=1),  # "1,5,10": EM's numbers of samples m
    "temperatures": numbers(minimum=0),  # "0.3,1,3": EM's tau, each > 0
    "num_iterations": integer(),
    "eval_steps": text(),  # steps at which every run is scored while it trains (RunConfig.eval_steps: "log", "250,500")
    "soft_vq_iterations": integer(minimum=0),  # 0: num_iterations
    "decoder_iterations": integer(minimum=0),  # steps fitting a decoder to a given code, encoder frozen (0: none)
    "decoder_lr": number(minimum=0, strict=True),  # Adam learning rate of that fit
    "batch_size": integer(),
    "lr": number(minimum=0, strict=True),
    "log_every": integer(),
    "num_seeds": integer(),
    "temperature_seeds": integer(),
    "torch_threads": integer(minimum=0),  # 0: torch's default
    # evaluation and display
    # the soft VQ-VAE's open choices (vqlib.factors): levels of each factor, the first one the centre
    "design_kind": one_of(("one_at_a_time", "factorial")),
    "recipes": some_of(FACTORS["recipe"]),  # "published,paper"
    "formulas": some_of(FACTORS["formula"]),
    "sigma_sources": some_of(FACTORS["sigma_source"]),
    "noises": some_of(FACTORS["noise"]),
    "controls": some_of(("ae", "vq")),  # models trained beside the soft VQ-VAE under the same recipe
    "diagnostic_points": integer(minimum=2),  # training steps at which the estimator is inspected
    "n_init": integer(),
    "classifier_iterations": integer(),
    "include_raw": flag(),
    "published_row": flag(),  # page 05: also the authors' published soft VQ-VAE (RunConfig.published_code) as a row
    "include_untrained": flag(),
    "kmeans_seeds": integer(),  # k-means restarts of the evaluation-noise measurement
    "n_images": integer(),
    "samples_per_image": integer(),
    "nll_samples": integer(),  # page 09: k of the importance-sampled NLL
    "n_neighbors": integer(),
    "max_points": integer(minimum=2),
    "perplexity": number(minimum=0, strict=True),  # t-SNE
    "tsne_jobs": integer(),
    # synthetic data (vqlib.synthetic)
    "n_train": integer(),
    "n_test": integer(),
    "input_dim": integer(minimum=2),
    "num_clusters": integer(),
    "cluster_std": number(),
    "bump_width": number(minimum=0, strict=True),
    "wound_turns": number(minimum=0, strict=True),  # vqlib.synthetic.wound_code
    "wound_inner_radius": _fraction,  # in (0, 1]
    # numerical checks (pages 02 and 03); a name_min must be smaller than its name_max. Page 02's three ranges:
    # sigma, one width shared by every codeword (sigma_k = sigma, as vqlib.posterior_mean's float sigma);
    # noise_std, the std of the white noise on z_e (as RunConfig.noise_std); sigma_k, unequal codeword widths (eq. 5)
    "dim": integer(),
    "num_instances": integer(),
    "mc_samples": integer(minimum=2),
    "mc_bins": integer(),
    "mc_dim": integer(minimum=2),
    "mc_codes": integer(minimum=2),
    "line_points": integer(minimum=3),
    "grid_size": integer(minimum=2),
    "panel_sigmas": numbers(minimum=0),
    "num_sigmas": integer(minimum=2),
    "num_noise_levels": integer(minimum=2),
    **{f"{name}_{end}": number(minimum=0, strict=True)
       for name in ("sigma", "noise_std", "sigma_k") for end in ("min", "max")},
}


@dataclass
class Session:
    parameters: dict  # the page's parameters as given (recorded in provenance.json)
    values: dict  # the same, checked and converted: a list parameter as its list
    results_dir: Path
    device: object
    started: float = field(default_factory=time.perf_counter)


def page_parameters(namespace: dict) -> dict:
    """The plain scalars of ``namespace`` (str, int, float, bool, None) whose names do not start with "_":
    in a fresh kernel, after the papermill parameters cell, exactly the page's parameters."""
    return {name: value for name, value in namespace.items()
            if not name.startswith("_") and (value is None or isinstance(value, (str, int, float, bool)))}


def check_parameters(parameters: dict, rules: dict | None = None) -> dict:
    """Every parameter checked against ``rules`` (over :data:`RULES`), all of them, before any error is raised:
    a ValueError then names each bad value with what is allowed, one per line."""
    rules = {**RULES, **(rules or {})}
    values, errors = {}, []
    for name, value in parameters.items():
        if name not in rules:
            errors.append(f"{name}={value!r} has no rule: add one to vqlib.notebook.RULES, or pass rules={{...}} "
                          "to notebook.start (a variable of a later cell? restart the kernel and run from the top)")
            continue
        try:
            values[name] = rules[name](name, value)
        except ValueError as error:
            errors.append(str(error))
    for low in [n for n in values if n.endswith("_min")]:
        high = low[:-len("_min")] + "_max"
        if high in values and not values[low] < values[high]:
            errors.append(f"{low}={parameters[low]!r} is not allowed: {low} must be smaller than "
                          f"{high}={parameters[high]!r}")
    if errors:
        raise ValueError("\n".join(errors))
    return values


def start(namespace: dict, rules: dict | None = None) -> Session:
    """Check the page's parameters (the plain scalars of ``namespace``, see :func:`page_parameters`) against
    :data:`RULES`, and ``rules`` for this page's own; create ``results_dir``, seed everything with ``seed``
    and print the device. Call it as ``notebook.start(globals())``."""
    parameters = page_parameters(namespace)
    values = check_parameters(parameters, rules)
    results_dir = Path(values.get("results_dir", "results"))
    results_dir.mkdir(parents=True, exist_ok=True)
    if "seed" in values:
        set_seed(values["seed"])
    session = Session(parameters, values, results_dir, resolve_device(values.get("device", "auto")))
    precision = (f"; training precision: {resolve_precision(values['precision'], session.device)}"
                 if "precision" in values else "")  # bf16 where the device has none: an error here, before any work
    print(f"device: {session.device}{precision}; results: {results_dir}")
    return session


def save_json(obj, session: Session, name: str) -> Path:
    path = session.results_dir / f"{name}.json"
    atomic_write_json(path, obj)
    return path


def seed_summary(frame, by, columns, digits: int = 3):
    """Mean ± standard deviation over the seeds of each group of ``frame`` (a pandas DataFrame), as text
    with ``digits`` decimals (one run: the mean alone), plus the number of runs in each group."""
    import pandas as pd

    grouped = frame.groupby(by, sort=True)[list(columns)]
    mean, std = grouped.mean(), grouped.std()
    out = pd.DataFrame({c: [f"{m:.{digits}f}" if pd.isna(s) else f"{m:.{digits}f} ± {s:.{digits}f}"
                            for m, s in zip(mean[c], std[c])] for c in columns}, index=mean.index)
    out["runs"] = grouped.size()
    return out


def seed_paired(frame, key, a, b, measures, seed: int = 0):
    """Seed-paired differences ``a - b`` of each of ``measures`` between the rows of ``frame`` (a pandas
    DataFrame with a ``seed`` column) whose ``key`` is ``a`` and those whose ``key`` is ``b``, the seeds both
    arms have matched, by :func:`vqlib.evaluation.paired_difference`. One row per measure: ``measure``,
    ``difference``, ``low``, ``high``, ``shown``, ``pairs``."""
    import pandas as pd

    from .evaluation import paired_difference

    left, right = (frame[frame[key] == v].set_index("seed") for v in (a, b))
    for arm, value in ((left, a), (right, b)):
        if not arm.index.is_unique:
            raise ValueError(f"{key} = {value!r} has several rows with the same seed: select one setting first")
    common = sorted(set(left.index) & set(right.index))
    return pd.DataFrame([{"measure": m, **paired_difference(left.loc[common, m].astype(float).to_numpy(),
                                                             right.loc[common, m].astype(float).to_numpy(), seed=seed)}
                         for m in measures], columns=["measure", "difference", "low", "high", "shown", "pairs"])


def interval(result: dict, digits: int = 2) -> str:
    """A :func:`vqlib.evaluation.paired_difference` result as text, the difference and its interval:
    ``"+0.12 [+0.03, +0.20]"``; with fewer than two pairs (no interval) the difference and the number of pairs."""
    difference, low, high = (result[k] for k in ("difference", "low", "high"))
    if low != low or high != high:  # NaN: no interval
        return f"{difference:+.{digits}f} (no interval: {result.get('pairs', 0)} pair(s))"
    return f"{difference:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def claim_list(claims) -> str:
    """Markdown bullets, one per ``(claim, holds, evidence)``: ``- **claim**: holds; evidence``.

    ``holds`` is True ("holds"), False ("does not hold"), None ("not tested here") or a short text of its own
    for an answer that is not yes or no ("shown at 2 of 5 K"); ``evidence`` is a sentence made from computed
    values. A page's conclusions: ``display(Markdown(notebook.claim_list(...)))``."""
    words = {True: "holds", False: "does not hold", None: "not tested here"}
    lines = []
    for claim, holds, evidence in claims:
        if not (holds is None or isinstance(holds, str)):
            holds = bool(holds)  # a NumPy bool counts too
        lines.append(f"- **{claim}**: {words.get(holds, holds)}" + (f"; {evidence}" if evidence else "."))
    return "\n".join(lines)


def save_table(frame, session: Session, name: str) -> Path:
    """Write a pandas DataFrame as CSV (and JSON records) into the results folder."""
    path = session.results_dir / f"{name}.csv"
    atomic_write_bytes(path, frame.to_csv(index=False).encode())
    atomic_write_json(session.results_dir / f"{name}.json", json.loads(frame.to_json(orient="records")))
    return path


def finish(session: Session, **extra):
    """Save ``provenance.json`` and show what produced this page: parameters, commit, versions, device, time."""
    import pandas as pd

    precision = session.parameters.get("precision")  # a page that trains: what its runs' steps ran in
    precision = resolve_precision(precision, session.device, strict=False) if precision is not None else None
    record = {"parameters": session.parameters, "wall_time_s": round(time.perf_counter() - session.started, 1),
              **provenance(session.device, precision), **extra}
    atomic_write_json(session.results_dir / "provenance.json", record)
    rows = [("parameter: " + k, v) for k, v in session.parameters.items()]
    rows += [("git commit", record["git_commit"]), ("device", record.get("device_name", record["device"]))]
    rows += [("training precision", precision)] if precision is not None else []
    rows += [("wall time (s)", record["wall_time_s"]), ("platform", record["platform"])]
    rows += [(f"version: {k}", v) for k, v in record["versions"].items()]
    return pd.DataFrame(rows, columns=["what produced this page", "value"]).set_index("what produced this page")
