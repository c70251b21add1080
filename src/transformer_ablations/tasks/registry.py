"""``TASKS``: every ``data.task`` and its family (the rules, collator, model and metrics it shares).

The order of ``TASKS`` is the order the tasks are listed in messages (pretraining, the
classification tasks, then the seq2seq tasks).
"""

from __future__ import annotations

from ..config import ConfigError, RunConfig
from ..data import examples, synthetic
from .spec import TaskFamily, TaskSpec, length_buckets


def _one_of(values) -> str:
    values = list(values)
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


# --- the checks of each family (objective x task x arch) ---------------------------------------
def _check_lm(cfg: RunConfig, task: TaskSpec) -> None:
    obj, arch = cfg.objective, cfg.model.arch
    if obj not in task.objectives:
        raise ConfigError(f"data.task={task.name} is for pretraining: objective must be {_one_of(task.objectives)}, "
                          f"got {obj}")
    archs = LM.archs[obj]
    if arch not in archs:
        note = " (bidirectional)" if archs == ("encoder",) else ""
        raise ConfigError(f"objective={obj} needs model.arch={_one_of(archs)}{note}, got model.arch={arch}")
    if cfg.data.selection_split and cfg.data.source != "synthetic":
        # a real corpus has two splits; its val_select would be val itself (selected on what is reported)
        raise ConfigError(f"data.selection_split=true needs data.source=synthetic for pretraining on a corpus, "
                          f"got data.source={cfg.data.source}")


def _check_seq2seq(cfg: RunConfig, task: TaskSpec) -> None:
    if cfg.objective not in task.objectives:
        raise ConfigError(f"data.task={task.name} is a seq2seq task: objective must be seq2seq, got {cfg.objective}")
    if cfg.model.arch not in SEQ2SEQ.archs[cfg.objective]:
        raise ConfigError(f"objective=seq2seq needs model.arch=encoder_decoder or decoder (prefix LM), got {cfg.model.arch}")


def _check_classification(cfg: RunConfig, task: TaskSpec) -> None:
    # objective names how the encoder was pretrained: none = random init, else a checkpoint is loaded
    obj = cfg.objective
    if obj not in task.objectives:
        raise ConfigError(f"objective={obj} needs data.task in {tasks_of(SEQ2SEQ)}, got data.task={task.name}")
    if cfg.model.arch not in CLASSIFICATION.archs[obj]:
        raise ConfigError(f"model.arch={cfg.model.arch} is for seq2seq tasks, got data.task={task.name}")
    if obj != "none" and cfg.finetune.pretrained is None:
        raise ConfigError(
            f"objective={obj} on classification task data.task={task.name} needs finetune.pretrained "
            "(a checkpoint or run dir); use objective=none to train from random init"
        )


# --- collators and models (imported when built: nothing here imports torch) ---------------------
def _lm_collator(cfg: RunConfig, tokenizer, max_len: int, kind: str):
    from ..data.collate import CausalCollator, MLMCollator

    if kind == "causal":
        return CausalCollator(tokenizer, max_len)
    return MLMCollator(tokenizer, max_len, cfg.data.mlm_probability, nsp=kind == "mlm_nsp", seed=cfg.seed)


def _seq2seq_collator(cfg: RunConfig, tokenizer, max_len: int, kind: str):
    from ..data.collate import Seq2SeqCollator

    return Seq2SeqCollator(tokenizer, max_len, "decoder" if cfg.model.arch == "decoder" else "encoder_decoder")


def _classification_collator(cfg: RunConfig, tokenizer, max_len: int, kind: str):
    from ..data.collate import ClassificationCollator

    return ClassificationCollator(tokenizer, max_len, cfg.data.pair_format)


def _tagging_collator(cfg: RunConfig, tokenizer, max_len: int, kind: str):
    from ..data.tagging import TaggingCollator

    return TaggingCollator(tokenizer, max_len, cfg.data.pair_format)


def _lm_model(cfg: RunConfig, num_classes: int | None = None):
    from ..model.task_models import CausalLM, MaskedLM

    if cfg.objective == "causal":
        return CausalLM(cfg.model)
    return MaskedLM(cfg.model, nsp=cfg.objective == "mlm_nsp")


def _seq2seq_model(cfg: RunConfig, num_classes: int | None = None):
    from ..model.task_models import Seq2Seq

    return Seq2Seq(cfg.model)


def _classifier(cfg: RunConfig, num_classes: int | None = None):
    from ..model.task_models import SequenceClassifier

    if num_classes is None:
        raise ConfigError(f"data.task={cfg.data.task} is a classification task: its model needs num_classes")
    return SequenceClassifier(cfg.model, num_classes, cfg.finetune.pooling)


def _tagger(cfg: RunConfig, num_classes: int | None = None):
    from ..model.task_models import TokenTagger

    if num_classes is None:
        raise ConfigError(f"data.task={cfg.data.task} is a token-tagging task: its model needs num_classes")
    return TokenTagger(cfg.model, num_classes)


def _nsp_key(cfg: RunConfig) -> list[str]:
    return ["val/nsp_acc"] if cfg.objective == "mlm_nsp" else []


def _exact_match_keys(cfg: RunConfig) -> list[str]:
    return ["val/exact_match", *(f"val/exact_match_src{u}" for u in length_buckets(cfg.data.seq_len))]


LM = TaskFamily("lm", ("loss", "acc", "ppl"),
                {"mlm_nsp": ("encoder",), "mlm": ("encoder",), "causal": ("decoder",)},
                _check_lm, _lm_collator, _lm_model, _nsp_key)
CLASSIFICATION = TaskFamily("classification", ("loss", "acc", "f1", "mcc"),
                            {obj: ("encoder", "decoder") for obj in ("mlm_nsp", "mlm", "causal", "none")},
                            _check_classification, _classification_collator, _classifier, _nsp_key)
# token tagging: a classification task whose targets are tokens (the metrics are token-level); it shares
# the classification rules, metrics and objectives, not the collator or the model
TAGGING = TaskFamily("classification", CLASSIFICATION.metrics, CLASSIFICATION.archs, _check_classification,
                     _tagging_collator, _tagger, _nsp_key)
SEQ2SEQ = TaskFamily("seq2seq", ("loss", "token_acc", "ppl"), {"seq2seq": ("encoder_decoder", "decoder")},
                     _check_seq2seq, _seq2seq_collator, _seq2seq_model, _exact_match_keys)
FAMILIES = {f.name: f for f in (LM, CLASSIFICATION, SEQ2SEQ)}

TASKS: dict[str, TaskSpec] = {
    "corpus": TaskSpec("corpus", LM, min_seq_len=8),  # multi-sentence documents: mlm / mlm_nsp / causal
    "order": TaskSpec("order", CLASSIFICATION, 6, examples.order_rows, 2, synthetic_only=True),  # Q2
    "single": TaskSpec("single", CLASSIFICATION, 4, examples.single_rows, 2, length_sets=False),  # Q5/Q6
    "pair": TaskSpec("pair", CLASSIFICATION, 6, examples.pair_rows, 2, length_sets=False, pairs=True),  # Q5/Q6
    "retrieval": TaskSpec("retrieval", CLASSIFICATION, 8, examples.retrieval_rows, examples.RETRIEVAL_VALUES,
                          synthetic_only=True, words=examples.retrieval_words),  # associative recall (Q1, Q4)
    "pair_tag": TaskSpec("pair_tag", TAGGING, 6, examples.pair_tag_rows, 2, synthetic_only=True, length_sets=False,
                         pairs=True, target="tags"),  # Q5/Q6: each word of A tagged with B's first clause's mood
    "lookup": TaskSpec("lookup", CLASSIFICATION, 8, examples.lookup_rows, synthetic.LOOKUP_SYMBOLS,
                       synthetic_only=True),  # offset lookup: needs positions (Q1, Q2, Q4; issue 15)
    "reverse": TaskSpec("reverse", SEQ2SEQ, 5, examples.reverse_rows, synthetic_only=True),  # Q3
    "sort": TaskSpec("sort", SEQ2SEQ, 5, examples.sort_rows, synthetic_only=True),  # Q3
    "translate": TaskSpec("translate", SEQ2SEQ, 11, examples.translate_rows),  # Q3: reordering between vocabularies
}


def tasks_of(family: TaskFamily) -> list[str]:
    """The tasks of a family (by name: token tagging is a classification task)."""
    return [name for name, spec in TASKS.items() if spec.family.name == family.name]


def task_spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise ConfigError(f"data.task={task} is not valid; valid values: {', '.join(TASKS)}")
    return TASKS[task]


def check_run(cfg: RunConfig) -> RunConfig:
    """The task rules of ``cfg`` (objective x task x arch, the monitored metric); the config's own
    sections are checked by ``config.validate``. Raises :class:`ConfigError`."""
    task_spec(cfg.data.task).check(cfg)
    return cfg


def logged_metric_keys(cfg: RunConfig) -> list[str]:
    return task_spec(cfg.data.task).metric_keys(cfg)


TASK_METRICS = {name: family.metrics for name, family in FAMILIES.items()}
