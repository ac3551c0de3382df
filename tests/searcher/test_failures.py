"""Failing trials through the real runner: NaN loss and out-of-memory are recorded, not fatal."""

from __future__ import annotations

import torch
from optuna.trial import TrialState

from peftsearch.objectives.packed import PackedEngine
from peftsearch.searcher import open_study, run_study
from peftsearch.spaces import load_space


def test_nan_loss_fails_the_trial_with_its_reason(write_space) -> None:
    params = {"template": "plain", "lora_r": 2, "learning_rate": 1e30, "batch_size": 16}
    space = load_space(write_space(params=params, study={"n_trials": 2}))
    outcome = run_study(space, show_progress=False)
    trials = open_study(space, create=False).get_trials()
    assert outcome.counts == {"fail": 2}
    reason = trials[0].user_attrs["fail_reason"]
    assert "train loss is nan" in reason and "step" in reason, reason


def test_out_of_memory_fails_the_trial_and_the_study_goes_on(write_space, monkeypatch) -> None:
    real_step, calls = PackedEngine._train_step, []

    def flaky_step(self):
        calls.append(1)
        if len(calls) == 12:  # the second trial (10 steps each)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self)

    monkeypatch.setattr(PackedEngine, "_train_step", flaky_step)
    space = load_space(write_space(study={"n_trials": 3, "seed": 0, "pack": 1}))
    run_study(space, show_progress=False)
    trials = open_study(space, create=False).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["fail_reason"].startswith("out of memory: CUDA out of memory")


def test_out_of_memory_in_a_pack_retries_fewer_at_once(write_space, monkeypatch) -> None:
    """The pack halves and restarts its trials; none fails, and each result is what the same
    trial gives alone (so the study matches an unpacked run of the same seed)."""
    real_step, sizes = PackedEngine._train_step, []

    def flaky_step(self):
        sizes.append(len(self.active))
        if len(sizes) == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self)

    monkeypatch.setattr(PackedEngine, "_train_step", flaky_step)
    packed = load_space(write_space("packed.yaml", study={"pack": 2, "n_trials": 4, "seed": 0}))
    run_study(packed, show_progress=False)
    monkeypatch.undo()
    assert sizes[:4] == [2, 2, 2, 1]
    alone = load_space(write_space("alone.yaml", study={"pack": 1, "n_trials": 4, "seed": 0}))
    run_study(alone, show_progress=False)
    got = [(t.state, t.params, t.values) for t in open_study(packed, create=False).get_trials()]
    want = [(t.state, t.params, t.values) for t in open_study(alone, create=False).get_trials()]
    assert [g[0] for g in got] == [TrialState.COMPLETE] * 4
    assert {repr(g[1:]) for g in got[:2]} == {repr(w[1:]) for w in want[:2]}
