"""Failing trials through the real runner: NaN loss and out-of-memory are recorded, not fatal."""

from __future__ import annotations

import torch
from optuna.trial import TrialState

from peftsearch.objectives import runner as runner_mod
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
    real_train, calls = runner_mod.train, []

    def flaky_train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runner_mod, "train", flaky_train)
    space = load_space(write_space())
    run_study(space, show_progress=False)
    trials = open_study(space, create=False).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["fail_reason"].startswith("out of memory: CUDA out of memory")
