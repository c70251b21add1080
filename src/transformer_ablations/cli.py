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
An experiment file may carry two data blocks besides the config itself:

* ``scales: {smoke: {...}, quick: {...}, full: {...}}``: overrides applied for ``--scale``;
* ``when: [{if: {model.arch: decoder}, set: {...}}]``: normalisations applied when the resolved
  config matches (e.g. a decoder has no cross-attention to pool), so a sweep grid cannot produce
  a contradictory run; two grid points that normalise to one config are one run.

Precedence: defaults < config files < scale block < command-line flags < matching ``when`` blocks.
Each is one config layer given to jsonargparse in that order, so ``--print_config`` prints the
config that runs. ``--config`` takes a path or a packaged experiment name (``q1_scaling``).
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, Namespace, set_parsing_settings

from . import resources
from .config import (
    CLASSIFICATION_TASKS,
    ConfigError,
    RunConfig,
    check_config_shape,
    flatten,
    load_yaml,
    to_dict,
    validate,
)
from .data.real_sources import resolve_source

ALIASES = {"--pretrained": "--finetune.pretrained", "--task": "--data.task"}
# `ablate fit|finetune` exit codes by run status (2: usage error, before any work; 130: interrupted)
# (interrupted: 128 + the signal number, 130 for SIGINT, 143 for SIGTERM)
EXIT_CODES = {"finished": 0, "exists": 0, "failed": 1, "diverged": 3, "in_progress": 75}


set_parsing_settings(docstring_parse_attribute_docstrings=True)  # `--help` shows the config fields' docstrings


def _run_parser(prog: str = "ablate fit") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, exit_on_error=False, allow_abbrev=False, description="Train one ablation run.")
    parser.add_argument(
        "--config", action=ActionConfigFile,
        help="experiment YAML: a path or a packaged name such as q1_scaling (may be given several times)",
    )
    parser.add_class_arguments(RunConfig, fail_untyped=True, as_positional=False)
    return parser


def _apply_aliases(argv: Sequence[str]) -> list[str]:
    out = []
    for tok in argv:
        head, sep, tail = tok.partition("=")
        out.append(ALIASES.get(head, head) + sep + tail)
    return out


def _one_line(err: Exception) -> str:
    """jsonargparse's multi-line messages -> 'key=value: what is wrong; valid: ...'."""
    text = str(err)
    m = re.search(r'key "([^"]+)":\s*Expected a typing\.Literal\[(.*?)\]\. Got value: (.*?)(?:$|\n)', text, re.DOTALL)
    if m:
        key, valid, got = m.group(1), m.group(2).replace("'", ""), m.group(3).strip()
        return f"{key}={got} is not valid; valid values: {valid}"
    m = re.search(r'key "([^"]+)":\s*Expected a <class \'(\w+)\'>\. Got value: (.*?)(?:$|\n)', text, re.DOTALL)
    if m:
        return f"{m.group(1)}={m.group(3).strip()} is not a valid {m.group(2)}"
    m = re.search(r'Parser key "([^"]+)":\s*Unable to load config \'(.*?)\'', text)
    if m:  # a block (`--model=5`) given a value
        return f"{m.group(1)}={m.group(2)}: {m.group(1)} is a block of {m.group(1)}.* keys, not a value; set its keys, e.g. --{m.group(1)}.<key>=..."
    m = re.search(r"unrecognized arguments: (.*)", text)
    if m:
        opts = m.group(1).strip()
        near = _near_keys(opts.split()[0].lstrip("-").split("=")[0])
        return f"unknown option(s) {opts}; {near}run `ablate fit --help` for the valid keys"
    m = re.search(r'Key "([^"]+)" is not expected', text) or re.search(r"No action for key \"([^\"]+)\"", text)
    if m:
        return _unknown_key(m.group(1))
    m = re.search(r"Group '([^']+)' does not accept option '([^']+)'", text)
    if m:  # an unknown key inside a --config file
        return _unknown_key(f"{m.group(1)}.{m.group(2)}")
    m = re.search(r"Option '([^']+)' is not accepted", text)
    if m:
        return _unknown_key(m.group(1))
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _near_keys(key: str) -> str:
    import difflib

    from .config import all_keys

    near = difflib.get_close_matches(key, sorted(all_keys()), n=2, cutoff=0.85)
    return f"did you mean {', '.join(near)}? " if near else ""


def _unknown_key(key: str) -> str:
    return f"{key}: unknown key; {_near_keys(key)}run `ablate fit --help` for the valid keys"


def _nested(flat_or_nested: dict) -> dict:
    """Accept both {'model.arch': x} and {'model': {'arch': x}} in scale/when blocks."""
    out: dict = {}
    for key, value in flat_or_nested.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and parts[-1] in node:
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = _nested(value) if isinstance(value, dict) else value
    return out


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _when_layer(ns: Namespace, when: list) -> dict:
    """The merged ``set`` of the ``when`` blocks whose condition holds for ``ns``."""
    flat = flatten(ns.as_dict())
    out: dict = {}
    for i, block in enumerate(when):
        if not isinstance(block, dict) or "if" not in block or "set" not in block:
            raise ConfigError(f"when[{i}] must be a mapping with `if:` and `set:` keys, got {block!r}")
        if all(flat.get(k) == v for k, v in block["if"].items()):
            out = _deep_merge(out, _nested(block["set"]))
    return out


def _split_configs(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate the ``--config`` values (kept in order) from the other flags."""
    configs, rest, i = [], [], 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--config" and i + 1 < len(argv):
            configs.append(argv[i + 1])
            i += 2
            continue
        if tok.startswith("--config="):
            configs.append(tok.split("=", 1)[1])
        else:
            rest.append(tok)
        i += 1
    return configs, rest


def _config_layers(configs: list[str]) -> tuple[list[dict], dict, list]:
    """Each ``--config`` (path, packaged name or inline YAML) -> its layer without the data blocks,
    plus the merged ``scales`` and the concatenated ``when`` blocks of all files."""
    layers, scales, when = [], {}, []
    for token in configs:
        data = _load_config(token)
        scales = _deep_merge(scales, {k: _nested(v or {}) for k, v in (data.pop("scales", None) or {}).items()})
        when += data.pop("when", None) or []
        layers.append(data)
    return layers, scales, when


def _load_config(token: str) -> dict:
    if token.lstrip().startswith("{"):
        text, where = token, f"--config {token.strip()}"
    else:
        path = resources.find_file(token, "experiments")
        if path is None or not path.is_file():
            names = ", ".join(resources.packaged_names("experiments"))
            raise ConfigError(f"--config {token}: file not found; give a path or a packaged experiment ({names})")
        where = f"--config {token}"
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{where}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    try:
        data = load_yaml(text)  # refuses duplicate keys
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: malformed YAML ({' '.join(str(err).split())[:160]})") from None
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    # jsonargparse resets a block given as a scalar to its defaults: every block must be a mapping
    check_config_shape(data, where)
    return data


def _as_config(layer: dict) -> list[str]:
    return ["--config", yaml.safe_dump(layer)] if layer else []


def _to_run_config(parser: ArgumentParser, ns: Namespace) -> RunConfig:
    ns = copy.deepcopy(ns)
    ns.pop("config", None)
    init = parser.instantiate(ns) if hasattr(parser, "instantiate") else parser.instantiate_classes(ns)
    return RunConfig(**{k: init[k] for k in RunConfig.__dataclass_fields__})


def parse_run_config(argv: Sequence[str], prog: str = "ablate fit") -> RunConfig:
    """Command-line tokens -> a validated :class:`RunConfig`. Raises :class:`ConfigError` (one line).

    The layers, in order: config files, the scale block of the resolved ``scale``, the flags,
    the matching ``when`` blocks. ``ablate finetune`` also needs a downstream task and takes the
    objective from the pretrained checkpoint unless ``--objective`` is given."""
    argv = _apply_aliases(argv)
    configs, rest = _split_configs(argv)
    layers, scales, when = _config_layers(configs)
    files = [tok for layer in layers for tok in _as_config(layer)]
    parser = _run_parser(prog)
    try:
        ns = parser.parse_args([*files, *rest])
        check_config_shape(scales.get(ns.scale) or {}, f"scales.{ns.scale}")
        scale = _as_config(scales.get(ns.scale) or {})
        if scale:
            ns = parser.parse_args([*files, *scale, *rest])
        when_layer = _when_layer(ns, when)
        check_config_shape(when_layer, "when")
        tail = _as_config(when_layer)
        if tail:
            ns = parser.parse_args([*files, *scale, *rest, *tail])
        cfg = _to_run_config(parser, ns)
        cfg.data.source = resolve_source(cfg.data.source)  # real:text / real:sst2 -> the corpus a run reads
    except ArgumentError as err:
        raise ConfigError(_one_line(err)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"malformed YAML: {' '.join(str(err).split())}") from None
    if prog.endswith("finetune"):
        cfg = _finetune_config(cfg, explicit_objective=any(t.split("=")[0] == "--objective" for t in rest))
    return validate(cfg)


def _finetune_config(cfg: RunConfig, explicit_objective: bool) -> RunConfig:
    """A fine-tuning run needs a downstream task; its objective is the checkpoint's, unless given."""
    if cfg.data.task not in CLASSIFICATION_TASKS:
        raise ConfigError(
            f"ablate finetune needs a downstream task: --task {'|'.join(CLASSIFICATION_TASKS)}, or a --config "
            f"experiment that sets data.task (got data.task={cfg.data.task}, a pretraining task)"
        )
    spec = cfg.finetune.pretrained
    if spec and not spec.startswith("auto:") and not explicit_objective:
        from .training.checkpoints import pretrained_objective

        cfg.objective = pretrained_objective(spec)
    return cfg


def _fail(message: str, code: int = 2) -> NoReturn:  # noqa: F821
    print(f"ablate: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _cmd_fit(argv: list[str], prog: str) -> int:
    if any(tok in ("-h", "--help") for tok in argv):
        _run_parser(prog).print_help()
        return 0
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


def _parse_small(parser: ArgumentParser, argv: list[str]) -> Namespace:
    try:
        return parser.parse_args(argv)
    except ArgumentError as err:
        raise ConfigError(_one_line(err)) from None


def _cmd_report(argv: list[str]) -> int:
    parser = _small_parser("ablate report", "Verdicts, figures and reports/<suite>/report.{md,html} from run records.")
    parser.add_argument("--suite", default="quick", help="runs/<suite>/ (smoke, quick, full or a sweep suite name)")
    parser.add_argument("--runs_dir", "--runs-dir", default="runs")
    parser.add_argument("--out", default="reports", help="reports root; the report goes to <out>/<suite>/")
    parser.add_argument("--claims", default=None, help="default: experiments/claims_<suite>.yaml if it exists (real), "
                        "else experiments/claims.yaml; ./experiments first, else the packaged one")
    parser.add_argument("--sweeps", default=None, help="directory of the sweep files (default: ./sweeps, else packaged)")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the verdicts, figures and HTML to a wandb run (offline without a login: "
                             "`ablate sync` uploads it)")
    args = _parse_small(parser, argv)
    from .report import build_report, log_report_to_wandb
    from .sweeps.validate import sweeps_dir

    claims = args.claims or resources.suite_claims(args.suite)
    path = build_report(args.runs_dir, args.suite, args.out, claims, args.sweeps or sweeps_dir())
    print(f"report: {path} and {path.with_suffix('.html')}")
    if args.wandb:
        log_report_to_wandb(path, suite=args.suite)
    return 0


def _cmd_views(argv: list[str]) -> int:
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
    args = _parse_small(parser, argv)
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


def _cmd_export(argv: list[str]) -> int:
    parser = _small_parser("ablate export", "Export a checkpoint to model.safetensors + config.json + tokenizer.model.")
    parser.add_argument("checkpoint", help="a .ckpt file or a run directory")
    parser.add_argument("out_dir")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty out_dir")
    args = _parse_small(parser, argv)
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


def _cmd_sweeps(name: str):
    def run(argv: list[str]) -> int:
        from .sweeps import command

        return command.COMMANDS[name](argv)

    return run


COMMANDS = {
    "fit": lambda argv: _cmd_fit(argv, "ablate fit"),
    "finetune": lambda argv: _cmd_fit(argv, "ablate finetune"),
    "sweep": _cmd_sweeps("sweep"),
    "agents": _cmd_sweeps("agents"),
    "sync": _cmd_sweeps("sync"),
    "slurm": _cmd_sweeps("slurm"),
    "report": _cmd_report,
    "views": _cmd_views,
    "export": _cmd_export,
}


def _usage() -> str:
    return (__doc__ or "").split("\n\n")[1]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ABLATE_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage:\n" + _usage())
        return 0
    command, rest = argv[0], argv[1:]
    from .training.interrupts import RunInterrupted, interrupts_raise

    if command not in COMMANDS:
        _fail(f"unknown command {command!r}; valid commands: {', '.join(COMMANDS)}")
    try:
        with interrupts_raise():  # SIGTERM too: 143 and the resume line, never a silent exit
            return COMMANDS[command](rest)
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
