"""The testable claims (``experiments/claims.yaml``): load and validate.

One entry per claim::

    - id: q1_unscaled_worse_dk256
      question: q1
      claim: plain words
      sweep: q1_scaling              # sweeps/q1_scaling.yaml, runs/<suite>/q1_scaling/
      metric: val/acc
      higher_is_better: true         # the claim is that a is higher (true) / lower (false) than b
      compare: {a: {model.attention.scaling: sqrt_dk}, b: {model.attention.scaling: none}}
      condition: {model.head_dim: 256}
      expect: a_better
      literature: {direction: ..., anchor: ...}
      imprecision: optional text
      tier: primary                  # primary | secondary | check | control (report/verdicts.py)

``tier: control`` entries are null comparisons of known truth, built from existing runs, with
``control``: ``relabel`` (the runs of a vs b with the arms swapped in a pseudo-random, seeded half
of the seeds: no true effect remains) or ``split_seeds`` (only ``a``: its seeds split into two
disjoint halves compared with each other, Welch). Controls take ``expect: a_better`` and need no
``literature``.

``expect``:

- ``a_better``: effect = a - b (oriented by ``higher_is_better``) is > 0;
- ``a_not_worse``: effect > -``margin``;
- ``equivalent``: |effect| <= ``margin``;
- ``a_at_chance``: a's mean is within ``margin`` of ``chance`` and its CI includes chance (no ``b``);
- ``a_above_chance``: a's mean - ``chance`` > 0 (no ``b``);
- ``gap_grows``: the effect grows ``along`` a config key (``{key, from, to}``: effect at ``to``
  minus effect at ``from``; ``{key, values: [v1, v2, v3, ...], x: linear|log2|sqrt}``: the
  least-squares slope of the effect against x(value), one linear contrast of the arms' means), along metric buckets (``{metric_pattern: "val/exact_match_src{L}"}``:
  effect at the largest L minus effect at the smallest), or, for the attention-cost source,
  along ``{key: T}`` (slope of the effect against log2 T).

``chance`` (any other ``expect``, optional): the metric's chance level on the claim's task (0.5 for a
binary accuracy). When no seed of any compared arm rises past it by more than a tenth of the way to
the metric's top, the claim is "not resolved — cannot discriminate" (the arms learnt nothing to compare).

``best_of: {key: train.lr, by: val/acc, goal: max}`` (``key``: a key the sweep varies): each setting
is measured at the value of ``key`` where its mean over seeds of the metric ``by`` is best (``goal``
max or min): each arm at its own best learning rate, chosen by one metric for every claim that
names it. The report names the value chosen for each arm.

``source: attention_cost`` claims read ``runs/<suite>/q4_attention_cost.json`` rows instead of
run records (keys ``kind``, ``T``, ``d_k``; metrics ``time_ms``, ``peak_mem_mb``); their units of
replication are the rows (T, d_k, repeat), paired between a and b. ``scale: log`` compares
log values, so the effect reads as a ratio b/a.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, all_keys, toggle_values
from ..sweeps.validate import load_sweep
from .collect import fmt_value, same_value, sweep_file, sweep_grid
from .verdicts import TIERS

QUESTIONS = ("q1", "q2", "q3", "q4", "q5", "q6")
EXPECTS = ("a_better", "a_not_worse", "equivalent", "a_at_chance", "a_above_chance", "gap_grows")
ONE_SIDED = ("a_at_chance", "a_above_chance")  # only ``a``
NEEDS_MARGIN = ("a_not_worse", "equivalent", "a_at_chance")
NEEDS_CHANCE = ("a_at_chance", "a_above_chance")
SOURCES = ("runs", "attention_cost")
SCALES = ("linear", "log")

ATTENTION_COST_KEYS: dict[str, tuple | None] = {
    "kind": ("dot_sdpa", "dot_reference", "additive", "dot_compiled", "additive_compiled"), "T": None, "d_k": None}
ATTENTION_COST_METRICS = ("time_ms", "peak_mem_mb", "flops")
RUN_METRIC_RE = re.compile(r"^(train|attn|val|val_len\d+x)/[A-Za-z0-9_./<>{}-]+$")

CONTROLS = ("relabel", "split_seeds")
NULL_LITERATURE = {"direction": "no effect (a null comparison of known truth)",
                   "anchor": "negative control: the verdict machinery calibrated on itself"}

_FIELDS = {
    "id", "question", "claim", "source", "sweep", "metric", "higher_is_better", "compare", "condition",
    "expect", "margin", "chance", "along", "scale", "literature", "imprecision", "note", "tier", "control",
    "best_of",
}


@dataclass(frozen=True)
class Claim:
    id: str
    question: str
    claim: str
    metric: str
    higher_is_better: bool
    a: dict[str, Any]
    b: dict[str, Any]
    expect: str
    literature_direction: str
    literature_anchor: str
    sweep: str | None = None
    source: str = "runs"
    condition: dict[str, Any] = field(default_factory=dict)
    margin: float | None = None
    chance: float | None = None
    along: dict[str, Any] | None = None
    scale: str = "linear"
    imprecision: str | None = None
    note: str | None = None
    tier: str = "secondary"
    control: str | None = None
    best_of: dict[str, Any] | None = None

    @property
    def orient(self) -> float:
        return 1.0 if self.higher_is_better else -1.0

    @property
    def label_a(self) -> str:
        return _label(self.a)

    @property
    def label_b(self) -> str:
        return _label(self.b)


def _label(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={fmt_value(v)}" for k, v in d.items()) or "(all)"


def _fail(path: Path, cid: str, msg: str) -> None:
    raise ConfigError(f"{path}: claim '{cid}': {msg}")


def _check_settings(path, cid, what: str, d: Any, claim: dict, grid: dict | None) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        _fail(path, cid, f"{what} must be a mapping of dotted key -> value, got {type(d).__name__}")
    source = claim.get("source", "runs")
    if source == "attention_cost":
        for k, v in d.items():
            if k not in ATTENTION_COST_KEYS:
                _fail(path, cid, f"{what}: unknown attention-cost key '{k}' (valid: {', '.join(ATTENTION_COST_KEYS)})")
            allowed = ATTENTION_COST_KEYS[k]
            if allowed is not None and v not in allowed:
                _fail(path, cid, f"{what}: {k}={fmt_value(v)} is not valid (valid: {', '.join(allowed)})")
        return dict(d)
    keys, vocab = all_keys(), toggle_values()
    for k, v in d.items():
        if k not in keys:
            _fail(path, cid, f"{what}: unknown key '{k}' (not a RunConfig field; see config.all_keys())")
        if k in vocab and not any(same_value(v, ok) for ok in vocab[k]):
            valid = ", ".join(fmt_value(x) for x in vocab[k])
            _fail(path, cid, f"{what}: {k}={fmt_value(v)} is not a valid value (valid: {valid})")
        if grid is not None and k in grid and not any(same_value(v, g) for g in grid[k]):
            valid = ", ".join(fmt_value(x) for x in grid[k])
            _fail(path, cid, f"{what}: {k}={fmt_value(v)} is not in sweep {claim.get('sweep')}'s grid ({valid})")
    return dict(d)


def _claim_header(path: Path, raw: Any, index: int) -> tuple[str, Any, Any, dict]:
    """(id, tier, control, the entry with a control's default literature); every required field present."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: entry {index} is not a mapping")
    cid = raw.get("id")
    if not isinstance(cid, str) or not re.fullmatch(r"[A-Za-z0-9_]+", cid):
        raise ConfigError(f"{path}: entry {index} needs an 'id' of letters, digits and _ (got {cid!r})")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        _fail(path, cid, f"unknown field(s) {', '.join(unknown)} (valid: {', '.join(sorted(_FIELDS))})")
    tier, control = raw.get("tier"), raw.get("control")
    if tier not in TIERS:
        _fail(path, cid, f"tier={tier!r} must be one of {', '.join(TIERS)}")
    if (tier == "control") != (control is not None):
        _fail(path, cid, f"tier: control needs 'control' ({', '.join(CONTROLS)}), and only controls take it")
    if control is not None and control not in CONTROLS:
        _fail(path, cid, f"control={control!r} must be one of {', '.join(CONTROLS)}")
    if control is not None:
        raw = {"literature": NULL_LITERATURE, **raw}
    for req in ("question", "claim", "metric", "higher_is_better", "compare", "expect", "literature"):
        if req not in raw:
            _fail(path, cid, f"missing field '{req}'")
    return cid, tier, control, raw


def _claim_grid(path: Path, cid: str, raw: dict, source: str, sweeps_dir: Path, grids: dict) -> dict | None:
    """The grid of the claim's sweep (None for the attention-cost benchmark); its metric checked."""
    metric = raw["metric"]
    grid = None
    if source == "runs":
        sweep = raw.get("sweep")
        if not isinstance(sweep, str) or not sweep:
            _fail(path, cid, "missing field 'sweep' (the name of sweeps/<sweep>.yaml)")
        if sweep not in grids:
            sf = sweep_file(sweeps_dir, sweep)
            if not sf.is_file():
                _fail(path, cid, f"sweep '{sweep}' does not exist (no {sf})")
            grids[sweep] = sweep_grid(load_sweep(sf))
        grid = grids[sweep]
        if not isinstance(metric, str) or not RUN_METRIC_RE.match(metric):
            _fail(path, cid, f"metric={metric!r} is not a metric key (train/…, attn/…, val/…, val_len<k>x/…)")
    else:
        if metric not in ATTENTION_COST_METRICS:
            _fail(path, cid, f"metric={metric!r} must be one of {', '.join(ATTENTION_COST_METRICS)} for source attention_cost")
    return grid


def _claim_comparison(path: Path, cid: str, raw: dict, control, expect: str, source: str, grid) -> tuple:
    """(compare.a, compare.b, condition), checked against the expectation and the grid."""
    compare = raw["compare"]
    if not isinstance(compare, dict) or "a" not in compare:
        _fail(path, cid, "compare must be a mapping with 'a' (and 'b') settings")
    if set(compare) - {"a", "b"}:
        _fail(path, cid, f"compare has unknown entries {sorted(set(compare) - {'a', 'b'})} (only a, b)")
    a = _check_settings(path, cid, "compare.a", compare.get("a"), raw, grid)
    b = _check_settings(path, cid, "compare.b", compare.get("b"), raw, grid)
    if control is not None:
        _check_control(path, cid, control, expect, b, source)
    elif expect in ONE_SIDED:
        if b:
            _fail(path, cid, f"expect={expect} compares a with chance: remove compare.b")
    elif not b:
        _fail(path, cid, f"expect={expect} needs compare.b")
    elif a == b:
        _fail(path, cid, "compare.a and compare.b are the same setting")
    condition = _check_settings(path, cid, "condition", raw.get("condition"), raw, grid)
    clash = sorted(set(condition) & (set(a) | set(b)))
    if clash:
        _fail(path, cid, f"condition and compare both set {', '.join(clash)}")
    return a, b, condition


def _parse_claim(path: Path, raw: Any, index: int, sweeps_dir: Path, grids: dict) -> Claim:
    cid, tier, control, raw = _claim_header(path, raw, index)
    if raw["question"] not in QUESTIONS:
        _fail(path, cid, f"question={raw['question']!r} must be one of {', '.join(QUESTIONS)}")
    expect = raw["expect"]
    if expect not in EXPECTS:
        _fail(path, cid, f"expect={expect!r} must be one of {', '.join(EXPECTS)}")
    if not isinstance(raw["higher_is_better"], bool):
        _fail(path, cid, "higher_is_better must be true or false")
    source = raw.get("source", "runs")
    if source not in SOURCES:
        _fail(path, cid, f"source={source!r} must be one of {', '.join(SOURCES)}")
    scale = raw.get("scale", "linear")
    if scale not in SCALES:
        _fail(path, cid, f"scale={scale!r} must be one of {', '.join(SCALES)}")
    metric = raw["metric"]
    grid = _claim_grid(path, cid, raw, source, sweeps_dir, grids)
    a, b, condition = _claim_comparison(path, cid, raw, control, expect, source, grid)
    margin, chance = raw.get("margin"), raw.get("chance")
    if expect in NEEDS_MARGIN and (not isinstance(margin, (int, float)) or isinstance(margin, bool) or margin < 0):
        _fail(path, cid, f"expect={expect} needs 'margin' (a number >= 0, in the metric's units)")
    if expect in NEEDS_CHANCE and (not isinstance(chance, (int, float)) or isinstance(chance, bool)):
        _fail(path, cid, f"expect={expect} needs 'chance' (a number, e.g. 0.5)")
    if chance is not None and (not isinstance(chance, (int, float)) or isinstance(chance, bool)):
        _fail(path, cid, f"chance={chance!r} must be a number (the metric's chance level, e.g. 0.5)")
    along = raw.get("along")
    if expect == "gap_grows":
        along = _check_along(path, cid, along, raw, grid, set(a) | set(b) | set(condition))
    elif along is not None:
        _fail(path, cid, "'along' is only for expect=gap_grows")
    best_of = _check_best_of(path, cid, raw.get("best_of"), grid, set(a) | set(b) | set(condition))
    lit = raw["literature"]
    if not isinstance(lit, dict) or not lit.get("direction") or not lit.get("anchor"):
        _fail(path, cid, "literature needs 'direction' and 'anchor'")
    return Claim(
        id=cid, question=raw["question"], claim=str(raw["claim"]).strip(), metric=metric,
        higher_is_better=raw["higher_is_better"], a=a, b=b, expect=expect,
        literature_direction=str(lit["direction"]).strip(), literature_anchor=str(lit["anchor"]).strip(),
        sweep=raw.get("sweep"), source=source, condition=condition,
        margin=float(margin) if margin is not None else None, chance=float(chance) if chance is not None else None,
        along=along, scale=scale, imprecision=(str(raw["imprecision"]).strip() if raw.get("imprecision") else None),
        note=(str(raw["note"]).strip() if raw.get("note") else None), tier=tier, control=control, best_of=best_of,
    )


def _check_best_of(path, cid, best_of, grid, used: set) -> dict | None:
    """``best_of``: {key (varied by the sweep, not set by the claim), by (a run metric), goal (max|min)}."""
    if best_of is None:
        return None
    if not isinstance(best_of, dict) or set(best_of) != {"key", "by", "goal"}:
        _fail(path, cid, "best_of must be {key: <config key the sweep varies>, by: <metric>, goal: max|min}")
    key, by, goal = best_of["key"], best_of["by"], best_of["goal"]
    if grid is None or not isinstance(key, str) or len(grid.get(key, ())) < 2:
        varied = ", ".join(k for k, v in (grid or {}).items() if len(v) > 1 and k != "seed") or "none"
        _fail(path, cid, f"best_of.key={key!r} must be a key the sweep varies (varied: {varied})")
    if key in used:
        _fail(path, cid, f"best_of.key={key} is also set in compare/condition")
    if not isinstance(by, str) or not RUN_METRIC_RE.match(by) or goal not in ("max", "min"):
        _fail(path, cid, f"best_of.by={by!r} must be a run metric (val/…) and best_of.goal={goal!r} max or min")
    return dict(best_of)


def _check_control(path, cid, control: str, expect: str, b: dict, source: str) -> None:
    if expect != "a_better" or source != "runs":
        _fail(path, cid, "controls take expect: a_better on run records (source: runs)")
    if control == "split_seeds" and b:
        _fail(path, cid, "control: split_seeds compares a's seeds with each other: remove compare.b")
    if control == "relabel" and not b:
        _fail(path, cid, "control: relabel swaps the arms of a vs b: it needs compare.b")


def _check_along(path, cid, along, raw, grid, used: set) -> dict:
    if not isinstance(along, dict):
        _fail(path, cid, "expect=gap_grows needs 'along': {key, from, to} or {metric_pattern: '...{L}'}")
    if raw.get("source", "runs") == "attention_cost":
        if along.get("key") != "T" or set(along) != {"key"}:
            _fail(path, cid, "attention-cost gap_grows claims take along: {key: T} (slope against log2 T)")
        return dict(along)
    if "metric_pattern" in along:
        pat = along["metric_pattern"]
        if set(along) != {"metric_pattern"} or not isinstance(pat, str) or pat.count("{L}") != 1:
            _fail(path, cid, "along.metric_pattern must be a metric key with one '{L}', e.g. val/exact_match_src{L}")
        return dict(along)
    if "values" in along:
        return _check_slope_along(path, cid, along, raw, grid, used)
    if set(along) != {"key", "from", "to"}:
        _fail(path, cid, "along needs exactly key, from, to (or key, values, x; or metric_pattern)")
    key = along["key"]
    if key in used:
        _fail(path, cid, f"along.key {key} is also set in compare/condition")
    _check_settings(path, cid, "along", {key: along["from"]}, raw, grid)
    _check_settings(path, cid, "along", {key: along["to"]}, raw, grid)
    if same_value(along["from"], along["to"]):
        _fail(path, cid, "along.from and along.to are the same value")
    return dict(along)


SLOPE_X = ("linear", "log2", "sqrt")


def _check_slope_along(path, cid, along, raw, grid, used: set) -> dict:
    """``{key, values, x}``: a slope of the effect over three or more numeric values of ``key``."""
    if set(along) != {"key", "values", "x"} or along["x"] not in SLOPE_X:
        _fail(path, cid, f"along with values needs exactly key, values, x (x one of {', '.join(SLOPE_X)})")
    key, values = along["key"], along["values"]
    if key in used:
        _fail(path, cid, f"along.key {key} is also set in compare/condition")
    if (not isinstance(values, list) or len(values) < 3 or len(set(values)) != len(values)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)):
        _fail(path, cid, "along.values must be three or more distinct positive numbers (a slope, not a difference)")
    for v in values:
        _check_settings(path, cid, "along", {key: v}, raw, grid)
    return dict(along)


def load_claims(path: str | Path, sweeps_dir: str | Path) -> list[Claim]:
    """Read and validate a claims file against the config vocabulary and the sweep files.

    Raises :class:`ConfigError` with a one-line message at the first problem.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"claims file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    entries = data.get("claims") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a non-empty list of claims (top-level 'claims:' list)")
    grids: dict[str, dict] = {}
    claims, seen = [], set()
    for i, raw in enumerate(entries):
        c = _parse_claim(path, raw, i, Path(sweeps_dir), grids)
        if c.id in seen:
            raise ConfigError(f"{path}: claim id '{c.id}' appears twice")
        seen.add(c.id)
        claims.append(c)
    for q in QUESTIONS:
        primaries = [c.id for c in claims if c.question == q and c.tier == "primary"]
        if len(primaries) > 1:
            raise ConfigError(f"{path}: question {q} has {len(primaries)} primary claims ({', '.join(primaries)}); "
                              "exactly one claim per question may be primary")
    return claims
