"""The ``ablate`` command.

    ablate fit      --config experiments/q1_scaling.yaml [--scale=smoke] [--model.attention.scaling=none ...]
    ablate finetune --config experiments/q5_finetune.yaml --pretrained runs/.../s0-abc --task pair
    ablate sweep    sweeps/q1_scaling.yaml [--scale=quick] [--workers=2]
    ablate report   [--suite=quick] [--wandb]
    ablate views    q1 [--scale=quick] [--dry-run]
    ablate agents   SWEEP_ID --gpus 0,1
    ablate slurm    SWEEP_ID --tasks 8 --count 3
    ablate export   CHECKPOINT OUT_DIR
    ablate sync     [--dry-run]

Run configs are parsed by jsonargparse from :class:`~transformer_ablations.config.RunConfig`:
every dotted key of the toggle vocabulary is a flag, ``--config`` files stack, later flags win.
How the layers (config files, ``scales``, ``when`` blocks, flags) combine: ``config.compose``.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, NoReturn

import yaml
from jsonargparse import ArgumentError, ArgumentParser, Namespace

from . import resources
from .config import ConfigError, run_parser, to_dict
from .sweeps.command import SUBCOMMANDS as SWEEP_COMMANDS
from .training.configure import parse_run_config

# `ablate fit|finetune` exit codes by run status (2: usage error, before any work; 130: interrupted)
# (interrupted: 128 + the signal number, 130 for SIGINT, 143 for SIGTERM)
EXIT_CODES = {"finished": 0, "exists": 0, "failed": 1, "diverged": 3, "in_progress": 75}


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"ablate: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _run_fit(args: Namespace, argv: list[str], prog: str = "ablate fit") -> int:
    """``ablate fit|finetune``: the run config composes from its layers (``config.compose``), so its
    tokens go to ``parse_run_config`` as given, not through the root parser's run-config namespace."""
    printing = [tok for tok in argv if tok.split("=")[0] == "--print_config"]
    cfg = parse_run_config([tok for tok in argv if tok not in printing], prog=prog)
    if printing:  # the composed config, exactly what `train` receives (model.vocab_size: from the tokenizer)
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    from .training.interrupts import exit_code_of
    from .training.run import train

    result = train(cfg)
    if result.get("status") == "interrupted":
        step = result.get("step")
        at = f" at step {result['interrupted_at_step']}" if result.get("interrupted_at_step") is not None else ""
        kept = f" (last checkpoint: step {step})" if step else " (before its first checkpoint)"
        print(f"ablate: interrupted by {result.get('signal', 'SIGINT')}{at}{kept}: {result['run_dir']}; "
              f"resume with: {_resume_command(prog, argv)}", file=sys.stderr)
        return exit_code_of(result.get("signal"))
    return EXIT_CODES.get(result.get("status"), 1)


def _resume_command(prog: str, argv: Sequence[str]) -> str:
    """The command line that continues an interrupted command: the same one."""
    return shlex.join([*prog.split(), *argv])


def _small_parser(prog: str, description: str) -> ArgumentParser:
    return ArgumentParser(prog=prog, exit_on_error=False, allow_abbrev=False, description=description)


def _report_parser() -> ArgumentParser:
    parser = _small_parser("ablate report", "Verdicts, figures and reports/<suite>/report.{md,html} from run records.")
    parser.add_argument("--suite", default="quick", help="runs/<suite>/ (smoke, quick, real, full or a sweep suite name)")
    parser.add_argument("--runs_dir", "--runs-dir", default="runs")
    parser.add_argument("--out", default="reports", help="reports root; the report goes to <out>/<suite>/")
    parser.add_argument("--claims", default=None, help="default: experiments/claims_<suite>.yaml if it exists (real), "
                        "else experiments/claims.yaml; ./experiments first, else the packaged one")
    parser.add_argument("--sweeps", default=None, help="directory of the sweep files (default: ./sweeps, else packaged)")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the verdicts, figures and HTML to a wandb run (offline without a login: "
                             "`ablate sync` uploads it)")
    return parser


def _run_report(args: Namespace, argv: list[str]) -> int:
    from .report import build_report, log_report_to_wandb
    from .sweeps.validate import sweeps_dir

    claims = args.claims or resources.suite_claims(args.suite)
    path = build_report(args.runs_dir, args.suite, args.out, claims, args.sweeps or sweeps_dir())
    print(f"report: {path} and {path.with_suffix('.html')}")
    if args.wandb:
        log_report_to_wandb(path, suite=args.suite)
    return 0


def _views_parser() -> ArgumentParser:
    parser = _small_parser("ablate views", "Save a wandb report per question: parallel coordinates over the sweep's "
                           "toggles, bar charts of the primary metrics and learning curves grouped by the toggles. "
                           "Needs a wandb login (exit 2 without one); --dry-run prints the views without one.")
    parser.add_argument("questions", nargs="+", help="q1 ... q6, or all")
    parser.add_argument("--scale", default="quick", help="the runs' scale (smoke, quick, real, full)")
    parser.add_argument("--project", default=None, help="wandb project (default: $WANDB_PROJECT or transformer-ablations)")
    parser.add_argument("--entity", default=None, help="wandb entity (default: $WANDB_ENTITY or your default entity)")
    parser.add_argument("--claims", default=None, help="default: ./experiments/claims.yaml, else the packaged one")
    parser.add_argument("--sweeps", default=None, help="directory of the sweep files (default: ./sweeps, else packaged)")
    parser.add_argument("--dry_run", "--dry-run", action="store_true", help="print the views, save nothing")
    return parser


def _run_views(args: Namespace, argv: list[str]) -> int:
    from .report.figures import QUESTION_SWEEPS
    from .report.wandb_views import views

    questions = list(QUESTION_SWEEPS) if args.questions == ["all"] else args.questions
    bad = [q for q in questions if q not in QUESTION_SWEEPS]
    if bad:
        raise ConfigError(f"question {bad[0]!r} is not valid; valid: {', '.join(QUESTION_SWEEPS)}, all")
    from .sweeps.validate import sweeps_dir

    claims = args.claims or resources.find_file(f"experiments/{resources.CLAIMS_NAME}", "experiments")
    return views(questions, scale=args.scale, project=args.project, entity=args.entity,
                 sweeps_dir=args.sweeps or sweeps_dir(), claims_path=claims, dry_run=args.dry_run)


def _export_parser() -> ArgumentParser:
    parser = _small_parser("ablate export", "Export a checkpoint to model.safetensors + config.json + tokenizer.model.")
    parser.add_argument("checkpoint", help="a .ckpt file or a run directory")
    parser.add_argument("out_dir")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty out_dir")
    return parser


def _run_export(args: Namespace, argv: list[str]) -> int:
    _check_export_dir(Path(args.out_dir), args.overwrite)
    from .training.checkpoints import export

    print(f"exported to {export(args.checkpoint, args.out_dir)}")
    return 0


def _check_export_dir(out: Path, overwrite: bool) -> None:
    """``export`` writes into an empty or new folder; a folder with files needs ``--overwrite``."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir={out} is a file, not a folder; choose a new or empty folder")
    if out.is_dir() and not overwrite:
        try:
            held = sorted(p.name for p in out.iterdir())
        except OSError as err:
            raise ConfigError(f"out_dir={out}: cannot list it ({err.strerror})") from None
        if held:
            shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
            raise ConfigError(f"out_dir={out} is not empty ({len(held)} entries: {shown}); choose a new or empty "
                              "folder, or pass --overwrite to replace its files")


class Subcommand(NamedTuple):
    help: str
    parser: Callable[[], ArgumentParser]
    run: Callable[[Namespace, list[str]], int]  # (its parsed arguments, its tokens as given) -> exit code


SWEEP_HELP = {"sweep": "run sweep files (wandb sweep + agents when logged in, else the local executor)",
              "agents": "join an existing wandb sweep, one agent per GPU", "sync": "upload offline wandb runs",
              "slurm": "render a SLURM array of wandb agents"}
# the run commands compose their config in layers (config.compose); the others parse in the root parser
RUN_COMMANDS = ("fit", "finetune")
SUBCOMMANDS: dict[str, Subcommand] = {
    "fit": Subcommand("train one ablation run", lambda: run_parser("ablate fit"), _run_fit),
    "finetune": Subcommand("fine-tune a pretrained checkpoint on a downstream task",
                           lambda: run_parser("ablate finetune"),
                           lambda args, argv: _run_fit(args, argv, "ablate finetune")),
    **{name: Subcommand(SWEEP_HELP[name], parser, run) for name, (parser, run) in SWEEP_COMMANDS.items()},
    "report": Subcommand("verdicts, figures and the report of a suite", _report_parser, _run_report),
    "views": Subcommand("saved wandb views (a report) per question", _views_parser, _run_views),
    "export": Subcommand("export a checkpoint (safetensors + config + tokenizer)", _export_parser, _run_export),
}


def build_parser() -> ArgumentParser:
    """The one ``ablate`` parser: a jsonargparse subcommand per entry of :data:`SUBCOMMANDS`."""
    root = ArgumentParser(prog="ablate", exit_on_error=False, description=_usage())
    commands = root.add_subcommands(dest="command", required=True)
    for name, sub in SUBCOMMANDS.items():
        commands.add_subcommand(name, sub.parser(), help=sub.help)
    return root


def dispatch(argv: Sequence[str]) -> int:
    """``ablate COMMAND ...`` -> the command's exit code. Raises :class:`ConfigError` (one line) on bad input."""
    argv = list(argv)
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command not in SUBCOMMANDS:
        raise ConfigError(f"unknown command {command!r}; valid commands: {', '.join(SUBCOMMANDS)}")
    if any(tok in ("-h", "--help") for tok in rest):
        SUBCOMMANDS[command].parser().print_help()
        return 0
    if command in RUN_COMMANDS:
        return SUBCOMMANDS[command].run(Namespace(), rest)
    try:
        parsed = build_parser().parse_args(argv)
    except ArgumentError as err:  # jsonargparse's text, on one line, after the subcommand's name
        raise ConfigError(f"ablate {command}: {' '.join(str(err).split())[:300]}") from None
    return SUBCOMMANDS[command].run(parsed[command], rest)


def _usage() -> str:
    return (__doc__ or "").split("\n\n")[1]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ABLATE_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage:\n" + _usage())
        return 0
    from .training.interrupts import RunInterrupted, interrupts_raise, raise_if_interrupted

    try:
        with interrupts_raise():  # SIGTERM too: 143 and the resume line, never a silent exit
            code = dispatch(argv)
            raise_if_interrupted()  # a signal some library swallowed still gives its exit code
            return code
    except ConfigError as err:
        if debug:
            raise
        _fail(str(err))
    except (KeyboardInterrupt, RunInterrupted) as err:  # outside a run's own handling (parsing, a sweep)
        code = err.exit_code if isinstance(err, RunInterrupted) else 130
        what = err.name if isinstance(err, RunInterrupted) else "SIGINT"
        _fail(f"interrupted by {what}; resume with: {_resume_command('ablate', argv)}", code)
    except OSError as err:  # disk full, permissions, a vanished file: one line (the traceback with --debug)
        if debug:
            raise
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        _fail(f"{where}{err.strerror or err} ({type(err).__name__}); rerun with --debug for the traceback", 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
