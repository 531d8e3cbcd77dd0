"""Command line: ``python -m vqlib train ...``, ``python -m vqlib evaluate DIR`` and ``python -m vqlib sweep``.

Every option of ``train`` is a field of :class:`vqlib.config.RunConfig`, with the same name
(``--num-iterations`` for ``num_iterations``), help text and default. Bad arguments print one
line naming the option, the value and what is allowed, and exit with status 2; a run whose loss
becomes NaN or infinite stops, keeps its run folder, prints one line and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from dataclasses import MISSING, fields

from .config import RunConfig
from .evaluation import METRICS
from .datasets import DatasetUnavailableError
from .run_folder import RunFolderError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block, exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parse_optional_float(text: str):
    return None if text.lower() == "none" else float(text)


def _parse_optional_int(text: str):
    return None if text.lower() == "none" else int(text)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(RunConfig)
    for f in fields(RunConfig):
        hint = hints[f.name]
        kind = {int: int, float: float, str: str, int | None: _parse_optional_int}.get(hint, _parse_optional_float)
        choices = f.metadata.get("choices")
        default = f.default if f.default is not MISSING else None
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=default,
                            choices=choices, metavar=None if choices else f.name.upper(),
                            help=f"{f.metadata['help']} (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vqlib", description="Train and evaluate the soft VQ-VAE and its baselines "
                                                "(Wu & Flierl, AAAI 2020).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = commands.add_parser("train", help="train a model, evaluate it and write a run folder",
                                description="Train a model, then evaluate it with the paper's protocol. Writes "
                                            "config.json, checkpoint.pt, history.json, metrics.json and latents.npz "
                                            "to --out; a folder with a checkpoint is resumed.")
    train.add_argument("--out", required=True, metavar="DIR",
                       help="run folder, created; resumed if it has a checkpoint (default: none, required)")
    train.add_argument("--published-code", action="store_true",
                       help="start from the authors' published MNIST settings (RunConfig.published_code); "
                            "explicit options still override them (default: off)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")
    _add_config_options(train)
    evaluate = commands.add_parser("evaluate", help="re-evaluate a run folder from its checkpoint",
                                   description="Re-run the paper's evaluation on a trained run folder and rewrite "
                                               "its metrics.json and latents.npz.")
    evaluate.add_argument("run_dir", metavar="DIR", help="a run folder written by `vqlib train`")
    evaluate.add_argument("--n-init", type=int, default=None,
                          help="k-means initialisations (default: the value the run was trained with)")
    evaluate.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"),
                          help="device for encoding (default: cpu)")
    sweep = commands.add_parser("sweep", help="train and evaluate a grid of runs, many at once",
                                description="Expand a grid of RunConfig fields (models x seeds x settings), train "
                                            "compatible runs together as one stacked model and evaluate them; "
                                            "writes one run folder per run under --out and a summary table.")
    sweep.add_argument("--grid", required=True, metavar="JSON",
                       help='a JSON file, or JSON text: {"bottleneck": ["ae", "soft_vq"], "seed": [0, 1, 2]} or a '
                            "list of such objects (default: none, required)")
    sweep.add_argument("--out", required=True, metavar="DIR", help="folder of the run folders (default: none, required)")
    sweep.add_argument("--summary", metavar="CSV", default=None,
                       help="where to write the summary table (default: DIR/summary.csv)")
    sweep.add_argument("--max-runs", type=int, default=32, help="most runs trained together in one stack (default: 32)")
    sweep.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="a dask.distributed scheduler to run the batches on, e.g. tcp://10.0.0.1:8786 "
                            "(default: none, in this process)")
    sweep.add_argument("--no-progress", action="store_true", help="hide the progress bars (default: shown)")
    return parser


def _sweep(args) -> int:
    from pathlib import Path

    from .sweep import sweep

    text = args.grid
    if not text.lstrip().startswith(("{", "[")):
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"--grid={text!r} is not allowed: give a JSON file that exists, or JSON text")
        text = path.read_text()
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--grid is not valid JSON: {error}") from None
    if args.max_runs < 1:
        raise ValueError(f"max_runs={args.max_runs!r} is not allowed: max_runs must be an integer >= 1")
    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    summary_path = args.summary or str(Path(args.out) / "summary.csv")
    table = sweep(grid, args.out, client=client, max_runs=args.max_runs, progress=not args.no_progress,
                  summary_path=summary_path)
    print(table.to_string(index=False, max_colwidth=40))
    print(f"summary: {summary_path}")
    return 1 if table["diverged_at"].notna().any() else 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "train":
            from .runs import run_experiment

            explicit = {f.name for f in fields(RunConfig) if _given(argv, f.name)}
            values = {f.name: getattr(args, f.name) for f in fields(RunConfig)}
            if args.published_code:
                base = RunConfig.published_code().to_dict()
                values = {k: (values[k] if k in explicit else base[k]) for k in values}
            config = RunConfig(**values)
            metrics = run_experiment(config, args.out, progress=not args.no_progress, reuse=False)
        else:
            from .runs import evaluate_run

            if args.n_init is not None and args.n_init < 1:
                raise ValueError(f"n_init={args.n_init!r} is not allowed: n_init must be an integer >= 1")
            metrics = evaluate_run(args.run_dir, n_init=args.n_init, device=args.device)
    except (ValueError, OSError, DatasetUnavailableError, RunFolderError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"vqlib {args.command}: error: {message}", file=sys.stderr)
        return 2
    if metrics.get("diverged_at") is not None:
        print(f"vqlib {args.command}: error: {metrics['diverged'].splitlines()[0]}", file=sys.stderr)
        return 1
    summary = {k: metrics.get(k) for k in ("dataset", "bottleneck", "seed", *METRICS)}
    print(json.dumps(summary))
    return 0


def _given(argv, name: str) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    flag = f"--{name.replace('_', '-')}"
    return any(a == flag or a.startswith(flag + "=") for a in argv)
