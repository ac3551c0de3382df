"""Artifacts stored with Optuna's artifact API and the real optuna-dashboard serving them.

One real tiny study (3 trials) is run with the trial artifacts uploaded where the study loop
uploads them (after a trial's results, before ``study.tell``), then the dashboard is started in
a subprocess on loopback and queried over HTTP.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.artifacts import download_artifact, get_all_artifact_meta
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from peftsearch.searcher import open_study, run_study
from peftsearch.searcher.artifacts import (
    REPORT_NAME,
    artifact_store,
    config_name,
    loss_curve_name,
    metrics_name,
    upload_study_artifacts,
    upload_trial_artifacts,
)
from peftsearch.searcher.dashboard import banner
from peftsearch.spaces import load_space
from tests.conftest import run_cli, space_dict

pytestmark = pytest.mark.usefixtures("one_thread")

ENQUEUE = [
    {"template": "review", "prompt_length": 0, "lora_r": 0, "learning_rate": 0.02},
    {"template": "plain", "prompt_length": 2, "lora_r": 4, "learning_rate": 0.01},
]
WAIT = 20.0  # seconds: the most any one step of the server test waits


@pytest.fixture(scope="module")
def study_space(tmp_path_factory, tiny_model: Path, sentiment_csv: Path) -> Path:
    """A real 3-trial study whose COMPLETE trials got their artifacts just before ``tell``
    (the place the study loop calls ``upload_trial_artifacts``), and its report on the study."""
    root = tmp_path_factory.mktemp("dashboard_study")
    raw = space_dict(
        tiny_model, sentiment_csv, root / "out", study={"name": "tiny", "n_trials": 3, "seed": 1}
    )
    raw["study"]["enqueue"] = ENQUEUE
    path = root / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    space = load_space(path)
    notes: list[str] = []
    real_tell = optuna.study.Study.tell

    def tell(self, trial, values=None, state=None, skip_if_finished=False):
        if values is not None and state in (None, TrialState.COMPLETE):
            upload_trial_artifacts(self, trial, space, values=values, note=notes.append)
        return real_tell(self, trial, values, state, skip_if_finished)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(optuna.study.Study, "tell", tell)
        outcome = run_study(space, show_progress=False)
    assert outcome.counts == {"complete": 3} and outcome.report is not None
    study = open_study(space, create=False)
    assert upload_study_artifacts(study, space, outcome.report, note=notes.append)
    assert notes == []
    return path


def _read(space: Any, artifact_id: str, tmp_path: Path) -> bytes:
    to = tmp_path / f"download-{artifact_id}"
    download_artifact(
        artifact_store=artifact_store(space), file_path=str(to), artifact_id=artifact_id
    )
    return to.read_bytes()


def _metas(study: Any, target: Any) -> dict[str, str]:
    return {
        m.filename: m.artifact_id for m in get_all_artifact_meta(target, storage=study._storage)
    }


def test_each_trial_has_its_metrics_and_loss_curve(study_space: Path, tmp_path: Path) -> None:
    space = load_space(study_space)
    study = open_study(space, create=False)
    assert (space.output_dir / "artifacts").is_dir()
    for t in study.get_trials():
        metas = _metas(study, t)
        assert set(metas) == {metrics_name(t.number), loss_curve_name(t.number)}
        metrics = json.loads(_read(space, metas[metrics_name(t.number)], tmp_path))
        assert metrics["trial"] == t.number and metrics["study"] == "tiny"
        assert metrics["values"] == {"accuracy": t.values[0], "trainable_params": t.values[1]}
        assert metrics["params"] == t.user_attrs["params"]
        assert metrics["template_text"] == t.user_attrs["template_text"]
        assert metrics["trainable_pct"] == t.user_attrs["trainable_pct"]
        assert metrics["trial_seconds"] == t.user_attrs["trial_seconds"]
        text = _read(space, metas[loss_curve_name(t.number)], tmp_path).decode()
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == ["step", "train_loss"]
        assert [float(r[1]) for r in rows[1:]] == t.user_attrs["train_loss_curve"]
        assert int(rows[-1][0]) == t.user_attrs["train_steps"]


def test_study_has_the_report_and_each_pareto_config(study_space: Path, tmp_path: Path) -> None:
    space = load_space(study_space)
    study = open_study(space, create=False)
    metas = _metas(study, study)
    front = sorted(t.number for t in study.best_trials)
    assert set(metas) == {REPORT_NAME, *(config_name(n) for n in front)}
    report = space.output_dir / "report.html"
    assert _read(space, metas[REPORT_NAME], tmp_path) == report.read_bytes()
    for n in front:
        archive = zipfile.ZipFile(io.BytesIO(_read(space, metas[config_name(n)], tmp_path)))
        names = set(archive.namelist())
        assert {f"trial_{n}/{f}" for f in ("config.yaml", "export.json", "README.md")} <= names
        assert json.loads(archive.read(f"trial_{n}/export.json"))["trial"] == n
        config = archive.read(f"trial_{n}/config.yaml").decode()
        assert f"search train trial_{n}/config.yaml" in config
        assert ".export-" not in config and str(space.output_dir) not in config
        archive.extractall(tmp_path / "unzipped")
        assert load_space(tmp_path / "unzipped" / f"trial_{n}" / "config.yaml").study.n_trials == 1


def test_uploading_again_adds_nothing_and_refreshes_the_report(
    study_space: Path, tmp_path: Path
) -> None:
    space = load_space(study_space)
    study = open_study(space, create=False)
    before = {t.number: _metas(study, t) for t in study.get_trials()}
    study_before = _metas(study, study)
    notes: list[str] = []
    for t in study.get_trials():
        assert upload_trial_artifacts(study, t, space, note=notes.append) == []
    report = tmp_path / "report.html"
    report.write_text("<html>refreshed</html>", encoding="utf-8")
    assert upload_study_artifacts(study, space, report, note=notes.append) == [REPORT_NAME]
    assert upload_study_artifacts(study, space, None, note=notes.append) == []
    assert notes == []
    assert {t.number: _metas(study, t) for t in study.get_trials()} == before
    assert _metas(study, study) == study_before  # same artifacts, same ids
    assert _read(space, study_before[REPORT_NAME], tmp_path) == b"<html>refreshed</html>"
    upload_study_artifacts(study, space, space.output_dir / "report.html", note=notes.append)
    assert notes == []


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_finished_trial_gets_nothing_and_a_note(write_space) -> None:
    """Optuna attaches nothing to a finished trial; a running one takes the given values."""
    space = load_space(write_space())
    space.output_dir.mkdir()
    study = open_study(space)
    dist = {"template": CategoricalDistribution(["plain", "review"])}
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.5, 10], params={"template": "plain"}, distributions=dist
        )
    )
    notes: list[str] = []
    finished = study.get_trials()[0]
    assert upload_trial_artifacts(study, finished, space, note=notes.append) == []
    assert len(notes) == 1 and "already COMPLETE" in notes[0], notes
    assert _metas(study, finished) == {}
    running = study.ask()
    running.set_user_attr("train_loss_curve", [0.7, 0.6])
    running.set_user_attr("train_loss_curve_every", 3)
    running.set_user_attr("train_steps", 5)
    assert upload_trial_artifacts(study, running, space, values=[0.75, 20], note=notes.append) == [
        metrics_name(1),
        loss_curve_name(1),
    ]
    study.tell(running, [0.75, 20])
    assert set(_metas(study, study.get_trials()[1])) == {metrics_name(1), loss_curve_name(1)}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=WAIT) as r:  # loopback only
        body = r.read()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body


class _Dashboard:
    """``search dashboard SPACE --port 0`` in a subprocess; ``base`` is its http://127.0.0.1:P."""

    def __init__(self, space_file: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "peftsearch", "dashboard", str(space_file), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        out = self.proc.stdout
        threading.Thread(target=lambda: [self.lines.put(x) for x in out or []], daemon=True).start()
        self.printed: list[str] = []
        deadline = time.monotonic() + WAIT
        while not any(x.startswith("open http://") for x in self.printed):
            if time.monotonic() > deadline or (self.proc.poll() is not None and self.lines.empty()):
                self.stop()
                raise AssertionError(f"no URL printed: {self.printed}")
            with contextlib.suppress(queue.Empty):
                self.printed.append(self.lines.get(timeout=0.2))
        self.url = next(x for x in self.printed if x.startswith("open ")).split()[1]
        self.base = self.url.split("/dashboard")[0]

    def ctrl_c(self) -> int:
        """Stop it as a user does; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=WAIT)
        time.sleep(0.2)  # the reader thread drains what is left
        while not self.lines.empty():
            self.printed.append(self.lines.get())
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)


def test_dashboard_serves_the_study_trials_and_artifacts(study_space: Path) -> None:
    space = load_space(study_space)
    study = open_study(space, create=False)
    dash = _Dashboard(study_space)
    try:
        url, base = dash.url, dash.base
        assert base.startswith("http://127.0.0.1:")
        assert url.endswith(f"/dashboard/studies/{study._study_id}")
        assert any("study 'tiny'" in x and "sqlite:///" in x for x in dash.printed)
        assert b"<html" in _get(url).lower()

        listed = _get(f"{base}/api/studies")["study_summaries"]
        ours = [s for s in listed if s["study_name"] == "tiny"]
        assert len(ours) == 1 and ours[0]["directions"] == ["maximize", "minimize"]
        sid = ours[0]["study_id"]
        detail = _get(f"{base}/api/studies/{sid}")
        trials = detail["trials"]
        assert [t["number"] for t in trials] == [0, 1, 2]
        assert all(t["state"] == "Complete" for t in trials)
        assert {a["filename"] for a in detail["artifacts"]} >= {REPORT_NAME}
        for t in trials:
            files = {a["filename"]: a for a in t["artifacts"]}
            assert set(files) == {metrics_name(t["number"]), loss_curve_name(t["number"])}
            meta = files[metrics_name(t["number"])]
            assert meta["mimetype"] == "application/json"
            body = _get(f"{base}/artifacts/{sid}/{t['trial_id']}/{meta['artifact_id']}")
            assert body["trial"] == t["number"]
            keys = {a["key"] for a in t["user_attrs"]}
            assert {"template_text", "trainable_pct", "train_loss_curve"} <= keys
        report = next(a for a in detail["artifacts"] if a["filename"] == REPORT_NAME)
        page = _get(f"{base}/artifacts/{sid}/{report['artifact_id']}")
        assert page == (space.output_dir / "report.html").read_bytes()
        assert dash.proc.poll() is None
        assert dash.ctrl_c() == 0  # Ctrl-C: the normal way to stop it
        assert dash.printed[-1].strip() == "dashboard stopped", dash.printed
    finally:
        dash.stop()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_dashboard_finds_a_journal_study(write_space) -> None:
    """With no study.storage, a parallel run's <output>/study.journal is the study."""
    path = write_space()
    space = load_space(path)
    space.output_dir.mkdir()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = JournalStorage(JournalFileBackend(str(space.output_dir / "study.journal")))
    study = optuna.create_study(
        study_name="space", storage=journal, directions=["maximize", "minimize"]
    )
    trial = study.ask({"template": CategoricalDistribution(["plain", "review"])})
    assert upload_trial_artifacts(study, trial, space, values=[0.6, 30]) == [metrics_name(0)]
    study.tell(trial, [0.6, 30])
    dash = _Dashboard(path)
    try:
        assert any(str(space.output_dir / "study.journal") in x for x in dash.printed)
        listed = _get(f"{dash.base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in listed] == ["space"]
        (t,) = _get(f"{dash.base}/api/studies/{listed[0]['study_id']}")["trials"]
        assert [a["filename"] for a in t["artifacts"]] == [metrics_name(0)]
    finally:
        dash.stop()


def test_dashboard_refuses_a_busy_port(study_space: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run_cli("dashboard", str(study_space), "--port", str(port), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_dashboard_without_a_study_exits_2_and_makes_nothing(write_space) -> None:
    path = write_space()
    proc = run_cli("dashboard", str(path), timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no study 'space'" in lines[0]
    assert "search run" in lines[0]
    assert not (path.parent / "out").exists()


def test_dashboard_on_a_storage_without_that_study(write_space) -> None:
    path = write_space()
    (path.parent / "out").mkdir()
    optuna.create_study(study_name="other", storage=f"sqlite:///{path.parent / 'out' / 'study.db'}")
    proc = run_cli("dashboard", str(path), timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no study 'space'" in lines[0], lines
    assert optuna.get_all_study_names(f"sqlite:///{path.parent / 'out' / 'study.db'}") == ["other"]


def test_the_storage_password_is_never_shown(write_space) -> None:
    url = "postgresql://peft:s3cr3t-pw@127.0.0.1:1/studies"
    printed = "\n".join(banner("tiny", url, Path("/runs/tiny/artifacts"), "http://127.0.0.1:1/"))
    assert "s3cr3t-pw" not in printed and "peft:***@127.0.0.1:1/studies" in printed
    # An unreachable database (nothing listens on loopback port 1): one line, password masked.
    proc = run_cli("dashboard", str(write_space()), "--storage", url, timeout=60)
    assert proc.returncode == 2
    assert "s3cr3t-pw" not in proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "***" in proc.stderr


def test_the_study_note_names_the_front_and_the_pareto_figure_is_stored(study_space: Path) -> None:
    """run_study writes them at its end; read back the way optuna-dashboard reads them."""
    import json as _json

    from optuna_dashboard._note import get_note_from_system_attrs

    from peftsearch.reports.pareto import pareto_rows

    space = load_space(study_space)
    study = open_study(space, create=False)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    body = get_note_from_system_attrs(attrs, None)["body"]
    assert "### Pareto front (accuracy against trainable parameters)" in body
    assert "Trials: 3 complete." in body
    for r in pareto_rows(study):
        assert f"| {r['trial']}" in body and f"{r['trainable_params']:,}" in body
    assert "(knee)" in body
    chunks = [k for k in attrs if k.startswith("dashboard:plot_data:pareto:")]
    figure = _json.loads(
        "".join(attrs[k] for k in sorted(chunks, key=lambda k: int(k.rsplit(":", 1)[1])))
    )
    names = [trace.get("name") for trace in figure["data"]]
    assert "Pareto-optimal" in names and any(str(n).startswith("knee") for n in names)
