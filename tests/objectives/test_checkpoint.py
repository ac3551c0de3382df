"""`search train` resumes: a crash, kill -9 or Ctrl-C mid-training, then the same command,
gives the model an uninterrupted run gives (CPU: the same bits)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from safetensors.torch import load_file

from peftsearch.errors import UserError
from peftsearch.objectives import train as train_mod
from peftsearch.objectives.production import train_exported
from peftsearch.reports.export import export_trial
from peftsearch.searcher import open_study, run_study
from peftsearch.spaces import load_space
from tests.conftest import run_cli, space_dict

pytestmark = pytest.mark.usefixtures("one_thread")
# LoRA beneath a soft prompt and a head: every kind of trained tensor is in the checkpoint.
TRIAL = {"template": "review", "prompt_length": 2, "lora_r": 2, "learning_rate": 0.02}


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_model: Path, sentiment_csv: Path) -> Path:
    root = tmp_path_factory.mktemp("checkpoint")
    raw = space_dict(
        tiny_model,
        sentiment_csv,
        root / "out",
        study={"name": "ck", "n_trials": 1, "seed": 3, "enqueue": [TRIAL]},
    )
    raw["params"]["lora_dropout"] = 0.1  # dropout draws random numbers: the RNG is resumed too
    space_file = root / "space.yaml"
    space_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    run_study(load_space(space_file), show_progress=False)
    export = export_trial(open_study(load_space(space_file), create=False), 0, root / "export")
    return export / "config.yaml"


def _weights(model_dir: Path) -> dict[str, Any]:
    out = {}
    for f in sorted(model_dir.rglob("*.safetensors")):
        for k, v in load_file(f).items():
            out[f"{f.relative_to(model_dir)}:{k}"] = v
    return out


def _same_model(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and wa
    assert all(bool((wa[k] == wb[k]).all()) for k in wa)


def test_a_crashed_run_resumes_from_its_last_checkpoint_to_the_same_model(
    config: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    ref = train_exported(config, epochs=3, to=tmp_path / "ref", quiet=True, checkpoint_every=5)
    assert not (tmp_path / "ref.checkpoint").exists()  # removed once the model is saved
    real, calls = train_mod.batch_rows, []

    def crash_at_step_13(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 13:
            raise RuntimeError("simulated crash")
        return real(*args, **kw)

    monkeypatch.setattr(train_mod, "batch_rows", crash_at_step_13)
    target = tmp_path / "model"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_exported(config, epochs=3, to=target, quiet=True, checkpoint_every=5)
    assert not target.exists()
    state = target.with_name("model.checkpoint") / "state.pt"
    assert state.is_file()
    monkeypatch.undo()
    capsys.readouterr()
    again = train_exported(config, epochs=3, to=target, quiet=True, checkpoint_every=5)
    assert "resuming from step 10 of 60" in capsys.readouterr().err
    assert again["test_accuracy"] == ref["test_accuracy"]
    assert again["validation_accuracy"] == ref["validation_accuracy"]
    assert again["train_steps"] == ref["train_steps"] == 60
    _same_model(target, tmp_path / "ref")
    train_json = json.loads((target / "training.json").read_text(encoding="utf-8"))
    assert train_json["test_accuracy"] == ref["test_accuracy"]
    assert not state.parent.exists()


def test_a_checkpoint_of_another_run_is_refused(config: Path, tmp_path: Path, monkeypatch) -> None:
    real, calls = train_mod.batch_rows, []

    def crash(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 8:
            raise RuntimeError("simulated crash")
        return real(*args, **kw)

    monkeypatch.setattr(train_mod, "batch_rows", crash)
    with pytest.raises(RuntimeError):
        train_exported(config, epochs=3, to=tmp_path / "m", quiet=True, checkpoint_every=5)
    monkeypatch.undo()
    with pytest.raises(UserError, match="holds a checkpoint of another run"):
        train_exported(config, epochs=4, to=tmp_path / "m", quiet=True, checkpoint_every=5)
    assert (tmp_path / "m.checkpoint" / "state.pt").is_file()  # nothing of the user's is lost


def _start(config: Path, to: Path) -> subprocess.Popen:
    args = ["train", str(config), "--epochs", "60", "--to", str(to), "--checkpoint-every", "50"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "peftsearch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "no checkpoint appeared"
        time.sleep(0.01)


@pytest.mark.parametrize("how", ["kill -9", "ctrl-c"])
def test_the_same_command_after_kill_or_ctrl_c_finishes_with_the_same_result(
    config: Path, tmp_path: Path, how: str
) -> None:
    """1,200 steps, a checkpoint every 50: stopped soon after the first one."""
    target = tmp_path / "model"
    proc = _start(config, target)
    _wait_for(target.with_name("model.checkpoint") / "state.pt", proc)
    proc.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if how == "ctrl-c":
        assert proc.returncode == 130
        assert "interrupted at step" in err and "the same command resumes" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    done = run_cli(
        "train", str(config), "--epochs", "60", "--to", str(target), "--checkpoint-every", "50"
    )
    assert done.returncode == 0, done.stderr
    assert "resuming from step" in done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    ref = train_exported(config, epochs=60, to=tmp_path / "ref", quiet=True, checkpoint_every=0)
    assert float(lines["test_accuracy"]) == ref["test_accuracy"]
    _same_model(target, tmp_path / "ref")
