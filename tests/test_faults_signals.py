"""A signal is never lost to library code that swallows exceptions.

`datasets`' fingerprint hasher wraps dill in a bare ``except:``: a SIGTERM that landed there (CI
caught it, in the kill -9 test) vanished, and the run finished with exit 0. Here the signal is sent
inside a bare ``except:`` at each stage of a run: the run still ends ``interrupted`` by it."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from test_faults_runs import _cfg, read_json
from transformer_ablations.training import callbacks, run
from transformer_ablations.training.interrupts import (
    RunInterrupted,
    interrupt_recorded,
    interrupts_raise,
    raise_if_interrupted,
)


def _swallowed_sigterm() -> None:
    """What a library with a bare ``except:`` does to the signal's exception."""
    slept = False
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
        slept = True
    except:  # noqa: E722, S110 - the point of the test
        pass
    assert not slept, "the SIGTERM handler did not raise"


def test_a_swallowed_signal_is_raised_again_until_it_is_recorded():
    with interrupts_raise():
        raise_if_interrupted()  # nothing received: passes
        _swallowed_sigterm()
        for _ in range(2):  # every safe point raises it, not only the first
            with pytest.raises(RunInterrupted) as err:
                raise_if_interrupted()
            assert err.value.name == "SIGTERM" and err.value.exit_code == 143
        interrupt_recorded()
        raise_if_interrupted()  # answered: passes
    with interrupts_raise():  # the next use starts clean
        raise_if_interrupted()


class _SignalsOnCollection:
    """An object whose finaliser is where the signal lands: Python cannot raise from ``__del__``."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here, inside the finaliser


def test_a_signal_inside_a_finaliser_is_remembered_without_a_traceback():
    seen = []  # what reaches the hook that prints "Exception ignored in ...: Traceback ..."
    previous, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        with interrupts_raise():
            obj = _SignalsOnCollection()
            start = time.monotonic()
            del obj  # Python cannot raise from a finaliser: the exception goes to sys.unraisablehook
            assert time.monotonic() - start < 4, "the SIGTERM handler did not raise"
            with pytest.raises(RunInterrupted) as err:  # remembered: the next safe point raises it
                raise_if_interrupted()
            assert err.value.name == "SIGTERM"
            interrupt_recorded()
            _Raises()  # another exception in a finaliser still reaches the previous hook
        assert [type(u.exc_value) for u in seen] == [ValueError]
        assert sys.unraisablehook == seen.append  # restored on exit
    finally:
        sys.unraisablehook = previous


class _Raises:
    def __del__(self):
        raise ValueError("not a signal")  # no reference is kept: the finaliser runs at once


@pytest.mark.parametrize("where", ["prepare", "batch", "after_last_batch"])
def test_a_run_whose_signal_a_library_swallowed_ends_interrupted(tmp_path, monkeypatch, where):
    cfg = _cfg(tmp_path, "--train.max_steps=8", "--train.val_every=4")
    if where == "prepare":
        real = run.prepare

        def prepare(c):
            prepared = real(c)
            _swallowed_sigterm()
            return prepared

        monkeypatch.setattr(run, "prepare", prepare)
    else:
        hook = "on_train_batch_end" if where == "batch" else "on_train_end"
        at = 2 if where == "batch" else 8

        def swallow(self, trainer, *args):
            if trainer.global_step == at:
                _swallowed_sigterm()

        monkeypatch.setattr(callbacks.DivergenceGuard, hook, swallow, raising=False)
    result = run.train(cfg)
    assert result["status"] == "interrupted" and result["signal"] == "SIGTERM", result
    record = read_json(Path(result["run_dir"]) / "summary.json")
    if where == "prepare":  # before the run existed: nothing was written
        assert record is None
        return
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM", record
    if where == "batch":  # stopped before its next batch: steps 3.. never trained
        assert record["interrupted_at_step"] == 2, record
    monkeypatch.undo()
    resumed = run.train(cfg)  # and the same run resumes to its end
    assert resumed["status"] == "finished" and resumed["step"] == 8, resumed


def test_the_cli_answers_signals_without_importing_lightning():
    """Every CLI command imports the interrupt handling; it must not pull in Lightning, and with it
    matplotlib, which writes its font cache under HOME (a sweep parent writes nothing there)."""
    import subprocess
    import sys

    code = "import sys, transformer_ablations.training.interrupts; print(sorted({'lightning', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
