"""TrialConfig: every parameter of a trial, concrete and frozen, stored as a plain dict."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from peftsearch.objectives.trial import TrialConfig
from peftsearch.spaces import RULES


def test_values_over_the_defaults_in_the_vocabularys_order() -> None:
    t = TrialConfig.from_values({"lora_r": 2, "template": "plain", "target_modules": "q, v"})
    assert list(t) == list(RULES)  # the suggest order, whatever the values' order
    assert t["lora_r"] == 2 and t["epochs"] == RULES["epochs"].default
    assert t["target_modules"] == ["q", "v"]  # a searched list is stored comma-joined
    assert t.kind == "lora"
    assert TrialConfig.from_values({"lora_r": 0, "prompt_length": 4}).kind == "prompt"
    with pytest.raises(KeyError, match="unknown parameter 'rank'"):
        TrialConfig.from_values({"rank": 4})


def test_frozen_yet_stored_and_sent_as_a_dict() -> None:
    t = TrialConfig.from_values({"template": "plain"})
    for change in (
        lambda: t.__setitem__("lora_r", 1),
        lambda: t.update(lora_r=1),
        lambda: t.pop("lora_r"),
        lambda: t.__delitem__("lora_r"),
    ):
        with pytest.raises(TypeError, match="frozen"):
            change()
    assert json.loads(json.dumps(t)) == dict(t)  # an Optuna user attribute
    again = pickle.loads(pickle.dumps(t))  # to a --workers process
    assert type(again) is TrialConfig and again == t
    assert copy.deepcopy(t) == t and {**t, "lora_r": 0}["lora_r"] == 0
