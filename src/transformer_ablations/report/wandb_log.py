"""``ablate report --wandb``: the built report (verdict table, figures, the HTML page) as a wandb
run of job type ``report``: online when logged in, else an offline run under
``<reports>/<suite>/wandb/`` that ``ablate sync`` (``make sync``) uploads later."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..runs.wandb_login import DEFAULT_PROJECT, has_wandb_login

VERDICT_COLUMNS = ("id", "question", "tier", "claim", "metric", "verdict", "effect", "ci_low", "ci_high",
                   "p", "p_adjusted", "n", "deterministic", "effect_text")


def _mode() -> str:
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("disabled", "offline"):
        return env
    return "online" if has_wandb_login() else "offline"


def _cell(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else json.dumps(value, ensure_ascii=False)


def verdict_table(verdicts: list[dict]):
    """The verdicts as a ``wandb.Table``: the known columns a record has, in order, then the rest."""
    import wandb

    keys = [k for k in VERDICT_COLUMNS if any(k in v for v in verdicts)]
    keys += sorted({k for v in verdicts for k in v} - set(keys))
    return wandb.Table(columns=keys, data=[[_cell(v.get(k)) for k in keys] for v in verdicts])


def log_report_to_wandb(report_path: str | Path, project: str | None = None, entity: str | None = None,
                        suite: str | None = None) -> str | None:
    """Log the report next to ``report_path`` (report.md; verdicts.json, figures/*.png and
    report.html beside it) to a wandb run, and end that run. Returns the run's URL (online) or its
    offline directory; None (one line printed) when wandb is disabled or the report is missing."""
    report_dir = Path(report_path).parent
    verdicts_path = report_dir / "verdicts.json"
    mode = _mode()
    if mode == "disabled" or not verdicts_path.is_file():
        why = "WANDB_MODE=disabled" if mode == "disabled" else f"no {verdicts_path}"
        print(f"wandb: not logging the report ({why})")
        return None
    import wandb

    suite = suite or report_dir.name
    run = wandb.init(project=project or os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT),
                     entity=entity if mode == "online" else None, job_type="report", group="report",
                     name=f"report {suite}", config={"suite": suite}, dir=str(report_dir), mode=mode,
                     reinit="finish_previous")
    try:
        logged: dict[str, Any] = {"verdicts": verdict_table(json.loads(verdicts_path.read_text()))}
        for png in sorted((report_dir / "figures").glob("*.png")):
            logged[f"figures/{png.stem}"] = wandb.Image(str(png))
        html = report_dir / "report.html"
        if html.is_file():
            logged["report"] = wandb.Html(html.read_text(), inject=False)
        run.log(logged)
        where = run.url if mode == "online" else str(Path(run.dir).parent)
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish(exit_code=0)
    wandb.teardown()  # finish returns before wandb's service has written the run out; teardown waits for it
    if mode == "online":
        print(f"wandb: report logged to {where}")
    else:
        print(f"wandb: report logged offline to {where}; `make sync` uploads it once you are logged in")
    return where
