"""One flat run configuration shared by the library, the command line and the notebooks.

Every field carries its help text (shown by ``python -m vqlib train --help``) and is checked in
``__post_init__``: a bad value raises ``ValueError`` naming the parameter, the value and what is
allowed, before any work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

from .bottlenecks import BOTTLENECKS, EM_UPDATES
from .bottlenecks.soft_vq import FORMULAS, GRADIENTS, NOISE_SCALES, SIGMA_SOURCES
from .bottlenecks.vq import REDUCTIONS
from .datasets import DATASETS, NUM_FOLDS
from .validation import check_choice, check_non_negative, check_number, check_positive_int, check_widths

_QUANTIZERS = ("vq", "soft_vq", "em_vq")
#: fields that only some bottlenecks read; for the others they do not change the model
APPLIES_TO = {
    "num_codes": _QUANTIZERS,
    "beta": ("vae", "beta_vae", "info_dropout", *_QUANTIZERS),
    "reduction": _QUANTIZERS,
    **{name: ("soft_vq", "noisy_ae") for name in ("noise_std", "noise_scale")},
    **{name: ("soft_vq",) for name in ("sigma_source", "gradient", "formula")},
    **{name: ("em_vq",) for name in ("em_update", "num_samples", "decay", "temperature")},
    "free_bits": ("vae", "beta_vae"),
}
DECODERS = ("feedforward", "pixelcnn")
#: fields that only the PixelCNN decoder reads
PIXELCNN_FIELDS = ("pixelcnn_layers", "pixelcnn_channels")
from .losses import RECONSTRUCTIONS
from .precision import PRECISIONS, resolve_precision
from .utils import resolve_device
ARCHITECTURES = ("auto", "mlp", "cnn")
DEVICES = ("auto", "cpu", "cuda", "mps")
#: the first of the log-spaced evaluation steps (``eval_steps="log"``: 250, 500, 1000, ...)
FIRST_EVAL_STEP = 250


def _f(default, help, choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class RunConfig:
    # data
    dataset: str = _f("mnist5k", "dataset to train on", DATASETS)
    data_dir: str = _f("data", "folder that holds (or receives) the downloaded datasets")
    # model
    bottleneck: str = _f("soft_vq", "bottleneck between encoder and decoder", tuple(BOTTLENECKS))
    architecture: str = _f("auto", "encoder/decoder: auto picks mlp for MNIST-like data, cnn for 32x32 colour images",
                           ARCHITECTURES)
    mlp_hidden: str = _f("500-500-2000", "mlp: hidden layer widths of the encoder (the decoder mirrors them)")
    decoder: str = _f("feedforward", "the architecture's own decoder, or an autoregressive PixelCNN conditioned on z "
                                     "(single-channel square images, e.g. binary_mnist5k)", DECODERS)
    pixelcnn_layers: int = _f(4, "pixelcnn: L masked 3x3 convolutions (its window: L rows above, L columns either side; "
                                 "0: no autoregression)")
    pixelcnn_channels: int = _f(32, "pixelcnn: channels of every layer and of the conditioning maps")
    code_dim: int = _f(64, "d, the width of z_e (paper: 64 on MNIST, 256 on SVHN/CIFAR-10)")
    num_codes: int = _f(128, "K, codebook size for vq, soft_vq and em_vq (paper: 128 on MNIST)")
    beta: float | None = _f(None, "KL weight (vae, beta_vae, info_dropout) or commitment weight (vq family); "
                                  "default: the bottleneck's own (vae 1, beta_vae 20, info_dropout 1, vq and em_vq 0.25, "
                                  "soft_vq 2.5 as in the published code; the paper gives none)")
    noise_std: float = _f(0.1, "soft_vq, noisy_ae: std of the white noise added to z_e during training (0: none)")
    noise_scale: str = _f("fixed", "soft_vq, noisy_ae: noise std noise_std, or noise_std times the spread of z_e (its std over "
                                   "the batch)", NOISE_SCALES)
    sigma_source: str = _f("encoder", "soft_vq: sigmas from a per-input encoder head of width K (paper and published code), "
                               "one learned sigma per codeword, or one learned sigma shared by all codewords",
                    SIGMA_SOURCES)
    gradient: str = _f("straight_through", "soft_vq: decoder-input gradient path", GRADIENTS)
    formula: str = _f("paper", "soft_vq: eq. 5-7 in log space, or the published notebook's formula", FORMULAS)
    free_bits: float = _f(0.0, "vae, beta_vae: free bits, a floor of lambda nats on each latent dimension's "
                               "batch-mean KL in the loss (Kingma et al. 2016; 0: none)")
    em_update: str = _f("sampled", "em_vq: M-step statistics, the sampled codes (Roy et al., tensor2tensor) or the exact "
                                   "responsibilities", EM_UPDATES)
    num_samples: int = _f(10, "em_vq: codes drawn per input from its responsibilities (m)")
    decay: float = _f(0.999, "em_vq: decay of the codebook's moving averages, in (0, 1) (Roy et al.: 0.999)")
    temperature: float = _f(1.0, "em_vq: tau in the responsibilities softmax(-||z_e - mu||^2 / tau) (paper: 1)")
    reduction: str = _f("sum", "vq family: latent terms summed over d (eq. 27) or averaged over elements "
                               "(published code)", REDUCTIONS)
    # training
    num_iterations: int = _f(2000, "number of Adam steps (paper: 40000)")
    batch_size: int = _f(32, "batch size (paper: 32; published MNIST code: 64)")
    lr: float = _f(3e-4, "Adam learning rate (paper: 3e-4)")
    reconstruction: str = _f("bernoulli", "reconstruction term: Bernoulli log-likelihood (paper) or MSE divided by "
                                          "the data variance (published code)", RECONSTRUCTIONS)
    latent_weight: float = _f(1.0, "weight of the bottleneck loss (published MNIST code: 3.0)")
    seed: int = _f(0, "random seed for initialisation, batches and noise")
    device: str = _f("auto", "auto picks cuda, then mps, then cpu", DEVICES)
    precision: str = _f("fp32", "training arithmetic: fp32 throughout, or bf16 autocast for the encoder and decoder "
                                "only (bottleneck, losses, weights and Adam stay fp32; vqlib.precision), where the "
                                "device multiplies bf16 natively; auto: bf16 there, fp32 elsewhere", PRECISIONS)
    log_every: int = _f(100, "steps between progress-bar and loss-curve updates")
    checkpoint_every: int = _f(1000, "steps between checkpoints (an interrupted run resumes from the last)")
    # evaluation
    n_init: int = _f(10, "k-means initialisations for the clustering accuracy (paper: 100)")
    classifier_iterations: int = _f(500, "maximum iterations of the single-layer softmax classifier")
    cluster_split: str = _f("test", "k-means clustering on the test latents (paper) or on all latents, train and test "
                                    "(clustering fits no labels)", ("test", "all"))
    fold: int | None = _f(None, "cross-fitting: pool the dataset's train and test digits, split them into "
                                f"{NUM_FOLDS} stratified folds, train on the others and score on this one (0 to "
                                f"{NUM_FOLDS - 1}; none: the dataset's own train/test split)")
    eval_steps: str = _f("", "steps at which to score the run (ACC, NMI on its held-out digits) while it trains: "
                             "comma-separated steps, 'log' (250, 500, 1000, ... doubling, and num_iterations) or '' "
                             "(none: only the final evaluation)")

    def __post_init__(self):
        for f in fields(self):
            if f.metadata.get("choices"):
                check_choice(f.name, getattr(self, f.name), f.metadata["choices"])
        check_widths("mlp_hidden", self.mlp_hidden)
        for name in ("code_dim", "num_codes", "pixelcnn_channels", "num_samples", "num_iterations", "batch_size",
                     "log_every", "checkpoint_every", "n_init", "classifier_iterations"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))  # a NumPy integer becomes an int
        self.seed = check_positive_int("seed", self.seed, minimum=0)
        self.pixelcnn_layers = check_positive_int("pixelcnn_layers", self.pixelcnn_layers, minimum=0)
        for name in ("noise_std", "latent_weight", "beta", "free_bits"):
            if not (name == "beta" and self.beta is None):
                check_non_negative(name, getattr(self, name))
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)) or not 0 < self.decay < 1:
            raise ValueError(f"decay={self.decay!r} is not allowed: decay must be a number in (0, 1)")
        check_number("temperature", self.temperature, strict=True)
        if self.bottleneck == "em_vq" and self.num_codes < 2:
            raise ValueError(f"num_codes={self.num_codes!r} is not allowed for em_vq: K must be >= 2")
        if self.fold is not None:
            self.fold = check_positive_int("fold", self.fold, minimum=0, maximum=NUM_FOLDS - 1)
        self.evaluation_steps  # checks eval_steps against num_iterations
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (0 < self.lr < 1):
            raise ValueError(f"lr={self.lr!r} is not allowed: lr must be a number in (0, 1)")

    @classmethod
    def published_code(cls, **overrides) -> "RunConfig":
        """The authors' published MNIST notebook: no noise, per-input sigma head, their formula,
        straight-through, batch 64, normalised MSE + 3.0 * (codebook + 2.5 * commitment), element means."""
        values = dict(bottleneck="soft_vq", noise_std=0.0, sigma_source="encoder", formula="published",
                      gradient="straight_through", batch_size=64, reconstruction="nmse", latent_weight=3.0,
                      beta=2.5, reduction="mean")
        return cls(**{**values, **overrides})

    @property
    def evaluation_steps(self) -> tuple:
        """The steps of ``eval_steps`` as sorted ints (each in 1..num_iterations); "log" doubles from
        :data:`FIRST_EVAL_STEP` and ends at num_iterations."""
        text = self.eval_steps
        if not isinstance(text, str):
            raise ValueError(f"eval_steps={text!r} is not allowed: give comma-separated steps such as "
                             "'250,500,1000', 'log' or ''")
        text = text.strip()
        if text == "":
            return ()
        if text == "log":
            steps, step = [], FIRST_EVAL_STEP
            while step < self.num_iterations:
                steps.append(step)
                step *= 2
            return (*steps, self.num_iterations)
        try:
            steps = [int(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(f"eval_steps={text!r} is not allowed: give comma-separated integer steps such as "
                             "'250,500,1000', 'log' or ''") from None
        bad = [s for s in steps if not 1 <= s <= self.num_iterations]
        if bad:
            raise ValueError(f"eval_steps={text!r} is not allowed: every step must be in 1..num_iterations "
                             f"(1..{self.num_iterations}), and {bad[0]} is not")
        if steps != sorted(set(steps)):
            raise ValueError(f"eval_steps={text!r} is not allowed: the steps must be strictly increasing")
        return tuple(steps)

    @property
    def hidden(self) -> tuple:
        return check_widths("mlp_hidden", self.mlp_hidden)

    def canonical(self) -> "RunConfig":
        """This config with every field that its bottleneck does not read (:data:`APPLIES_TO`) at its
        default, and ``precision="auto"`` as what it picks on this machine (``"fp32"`` or ``"bf16"``):
        two configs with the same canonical form train the same model (the run folder name, reuse,
        resume and batching compare canonical forms)."""
        defaults = {f.name: f.default for f in fields(self)}
        unread = [name for name, models in APPLIES_TO.items() if self.bottleneck not in models]
        if self.decoder != "pixelcnn":
            unread += PIXELCNN_FIELDS
        return self.replace(**{name: defaults[name] for name in unread}, precision=self.training_precision(strict=False))

    def training_precision(self, strict: bool = True) -> str:
        """``"fp32"`` or ``"bf16"``: the precision this config trains in on this machine's ``device``.

        ``strict``: ``precision="bf16"`` where the device has no native bf16 is a ValueError (else kept)."""
        if self.precision == "fp32":
            return "fp32"
        # not strict: an explicit device that is absent here is kept (it has no native bf16 here)
        device = resolve_device(self.device) if strict or self.device == "auto" else self.device
        return resolve_precision(self.precision, device, strict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}: allowed keys are {sorted(known)}")
        return cls(**values)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)
