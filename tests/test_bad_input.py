"""Bad input through the real ``search`` entry point (issue 4, "Bad input, one test each").

Every case must end with exit code 2 and exactly one line on stderr,
``error: <space file>: <key>: <message> (got <value>)``, no traceback, and nothing created: no
output directory, no ``study.db``/``study.journal``/``splits.json``, nothing in the working
directory. ``validate`` is run too wherever it reads the bad part (not for storage or output,
which it never touches). A test's commands run concurrently, to keep this file fast.

Cases of the issue's list tested elsewhere, through the CLI the same way (not repeated here):

- malformed YAML (the message gives the line), unknown key, wrong type, template attribute
  access, model path that does not exist: ``tests/spaces/test_schema.py::
  test_cli_bad_space_is_one_line_exit_2_and_creates_nothing`` ids ``malformed``,
  ``unknown-key``, ``wrong-type``, ``template-attribute``, ``model-missing``;
- every schema rule in-process (messages, key paths, values): ``test_schema.py::test_bad_space``
  and ``::test_bad_paths``; data cleaning in-process: ``tests/objectives/test_data.py``.
"""

from __future__ import annotations

import importlib.util
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_cli, space_dict

NO_VALUE: Any = object()  # the case's line has no "(got ...)" to check
STUDY_FILES = ("study.db", "study.journal", "splits.json", "pareto.csv", "report.html")


@dataclass
class Case:
    """One command on one space file and the line it must print."""

    space: Path
    key: str
    fragments: list[str]
    value: Any = NO_VALUE
    commands: tuple[str, ...] = ("validate", "run")
    secret: str | None = None  # must appear nowhere in the output


def edit(data: dict[str, Any], edits: dict[str, Any]) -> dict[str, Any]:
    """Set ``{"dotted.key": value}`` in a nested dict; ``None`` removes the key."""
    for dotted, value in edits.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return data


@pytest.fixture
def no_model(tmp_path: Path) -> Path:
    """A model directory that is never reached: the bad part fails before the model loads."""
    path = tmp_path / "never_loaded_model"
    path.mkdir()
    return path


@pytest.fixture
def make_space(tmp_path: Path, sentiment_csv: Path, no_model: Path):
    """Write the conftest's small valid space with dotted-key edits; ``model`` picks the model."""

    def make(edits: dict[str, Any], name: str = "space.yaml", model: Path | None = None) -> Path:
        data = space_dict(model or no_model, sentiment_csv, tmp_path / "out")
        path = tmp_path / name
        path.write_text(yaml.safe_dump(edit(data, edits), sort_keys=False), encoding="utf-8")
        return path

    return make


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for directories)."""
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


def expect_bad_input(tmp_path: Path, *cases: Case) -> None:
    """Run every command of ``cases`` (concurrently) from an empty working directory under
    ``tmp_path``; each must fail with its one line, and ``tmp_path`` must be left as it was."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    before = tree(tmp_path)
    quiet = {"run": ["--no-progress"], "validate": []}
    jobs = [(c, [cmd, str(c.space), *quiet[cmd]]) for c in cases for cmd in c.commands]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        procs = list(pool.map(lambda job: run_cli(*job[1], cwd=cwd), jobs))
    for (case, args), proc in zip(jobs, procs, strict=True):
        where = f"search {' '.join(args)}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        assert proc.returncode == 2, where
        assert "Traceback" not in proc.stderr + proc.stdout, where
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, where
        line = lines[0]
        assert line.startswith(f"error: {case.space}: {case.key}: "), where
        for fragment in case.fragments:
            assert fragment in line, f"{fragment!r} missing\n{where}"
        if case.value is not NO_VALUE:
            assert line.endswith(f" (got {case.value!r})"), where
        if case.secret is not None:
            assert case.secret not in proc.stdout + proc.stderr, where
        if args[0] == "run":
            assert proc.stdout == "", where  # validate may report what it checked before
    assert tree(tmp_path) == before  # nothing created, changed or removed: out/, cwd/, inputs
    assert not (tmp_path / "out").exists()
    assert list(cwd.iterdir()) == []  # no runs/<name>/ from a default output
    made = [p for p in tmp_path.rglob("*") if p.name.startswith(STUDY_FILES)]
    assert made == []


# -- the space file itself (schema and paths; milliseconds, torch never imported) --------------

SPACE_CASES = [
    # (id, edits, key, fragments, value or NO_VALUE)
    (
        "low-greater-than-high",
        {"params.lora_r": {"type": "int", "low": 8, "high": 2}},
        "params.lora_r",
        ["`low <= high`", "low=8, high=2"],
        NO_VALUE,
    ),
    (
        "empty-choices",
        {"params.lora_r": {"type": "categorical", "choices": []}},
        "params.lora_r.choices",
        ["at least 1 item"],
        [],
    ),
    (
        "template-unknown-field",
        {"templates": {"plain": "Review: {review}"}},
        "templates.plain",
        ["slot {review} is not a declared text column", "declared: text"],
        "Review: {review}",
    ),
    (
        "template-no-slot",
        {"templates": {"plain": "Review: the film"}},
        "templates.plain",
        ["no text slot", "{text}"],
        "Review: the film",
    ),
    ("data-file-missing", {"data.path": "nope.csv"}, "data.path", ["no such file"], "nope.csv"),
    (
        "rslora-not-a-bool",
        {"params.use_rslora": 1},
        "params.use_rslora",
        ["must be true or false, got 1"],
        NO_VALUE,
    ),
    (
        "loraplus-ratio-zero",
        {"params.loraplus_lr_ratio": {"type": "float", "low": 0, "high": 16}},
        "params.loraplus_lr_ratio",
        ["must be > 0"],
        NO_VALUE,
    ),
    (
        "rank-given-to-ia3",
        {"params.adapter": "ia3", "params.lora_r": 4},
        "params.lora_r",
        ["lora_r is a parameter of dora and lora, but adapter is ia3: it would mean nothing"],
        4,
    ),
    (
        "ia3-rate-without-ia3",
        {
            "params.adapter": {"type": "categorical", "choices": ["lora", "none"]},
            "params.ia3_learning_rate": 0.01,
        },
        "params.ia3_learning_rate",
        ["a parameter of ia3, but adapter is lora / none"],
        0.01,
    ),
    (
        "data-file-missing-in-folder",
        {"data.path": "sub/nope.jsonl"},
        "data.path",
        ["no such file"],
        "sub/nope.jsonl",
    ),
    (
        "split-file-missing",
        {"data.path": None, "data.files": {"train": "train.csv"}},
        "data.files.train",
        ["no such file"],
        "train.csv",
    ),
    ("n-trials-zero", {"study.n_trials": 0}, "study.n_trials", ["greater than or equal to 1"], 0),
    ("pack-zero", {"study.pack": 0}, "study.pack", ["whole number from 1 to 256, or auto"], 0),
    ("pack-word", {"study.pack": "many"}, "study.pack", ["from 1 to 256, or auto"], "many"),
    ("pack-float", {"study.pack": 2.5}, "study.pack", ["whole number"], 2.5),
]


@pytest.mark.parametrize(
    ("edits", "key", "fragments", "value"),
    [c[1:] for c in SPACE_CASES],
    ids=[c[0] for c in SPACE_CASES],
)
def test_bad_space_file(make_space, tmp_path: Path, edits, key, fragments, value) -> None:
    expect_bad_input(tmp_path, Case(make_space(edits), key, fragments, value))


# -- the data (datasets loads it; the model is never reached) --------------------------------


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_missing_column(make_space, tmp_path: Path) -> None:
    templates = {"plain": "{review}", "review": "review : {review}"}
    space = make_space({"data.text_columns": ["review"], "templates": templates})
    fragments = ["column 'review' is not in the train data", "columns: text, label"]
    expect_bad_input(tmp_path, Case(space, "data.text_columns", fragments))


def test_labels_not_among_declared_labels(make_space, tmp_path: Path) -> None:
    rows = [{"text": f"film {i}", "label": ["neg", "pos", "meh"][i % 3]} for i in range(30)]
    data = _write(tmp_path / "meh.jsonl", rows)
    space = make_space({"data.path": str(data)})
    fragments = ["10 train rows", "not among the declared labels", "meh", "drop_unlisted_labels"]
    expect_bad_input(tmp_path, Case(space, "data.labels", fragments))


def test_split_empty_after_filtering(make_space, tmp_path: Path) -> None:
    """A given validation file whose rows are all filtered out: by label, or by blank text."""
    good = [{"text": f"film {i}", "label": ["neg", "pos"][i % 2]} for i in range(40)]
    train = str(_write(tmp_path / "train.jsonl", good))
    unlisted = [{"text": f"film {i}", "label": ["meh", "so-so"][i % 2]} for i in range(10)]
    blank = [{"text": [" ", ""][i % 2], "label": "pos"} for i in range(10)]
    cases = []
    for name, rows, key, value, fragment in [
        ("labels", unlisted, "data.labels", ["neg", "pos"], "labels (meh, so-so) are not declared"),
        ("texts", blank, "data.text_columns", ["text"], "all 10 rows have an empty text"),
    ]:
        files = {"train": train, "validation": str(_write(tmp_path / f"{name}.jsonl", rows))}
        edits = {"data.path": None, "data.files": files, "data.drop_unlisted_labels": True}
        space = make_space(edits, name=f"{name}.yaml")
        fragments = ["the validation split is empty after filtering", fragment]
        cases.append(Case(space, key, fragments, value))
    expect_bad_input(tmp_path, *cases)


# -- hub ids while offline (run_cli sets HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1) ---------


def test_hub_id_while_offline(make_space, tmp_path: Path) -> None:
    cases = [
        Case(
            make_space({"model.path": "someorg/some-model"}, name="model.yaml"),
            "model.path",
            ["no network", "use a local path", "a model directory or pkg://"],
            "someorg/some-model",
        ),
        Case(
            make_space({"data.path": "someorg/some-dataset"}, name="data.yaml"),
            "data.path",
            ["no network", "use a local path", ".csv/.tsv/.jsonl/.parquet file"],
            "someorg/some-dataset",
        ),
    ]
    expect_bad_input(tmp_path, *cases)


def test_model_directory_without_a_model(make_space, no_model: Path, tmp_path: Path) -> None:
    # (a model path that does not exist: see test_schema.py, id model-missing)
    space = make_space({})
    fragments = ["no model in this directory", "config.json"]
    expect_bad_input(tmp_path, Case(space, "model.path", fragments, str(no_model)))


# -- where results go: storage and output (only `run` touches them; the model loads first) ---


def test_unreachable_storage(make_space, tiny_model: Path, tmp_path: Path) -> None:
    password = "s3cret-pw-42"
    driver = "postgresql+psycopg2" if importlib.util.find_spec("psycopg2") else "postgresql"
    url = f"{driver}://alice:{password}@127.0.0.1:1/optuna"  # nothing listens on port 1
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory\n", encoding="utf-8")
    cases = [
        Case(
            # no `output:`: the default runs/<name>/ under the working directory must not appear
            make_space({"study.storage": url, "output": None}, name="pg.yaml", model=tiny_model),
            "study.storage",
            ["cannot open", f"{driver}://alice:***@127.0.0.1:1/optuna"],
            commands=("run",),
            secret=password,
        ),
        Case(
            make_space(
                {"study.storage": f"sqlite:///{blocker}/study.db"},
                name="sqlite.yaml",
                model=tiny_model,
            ),
            "study.storage",
            ["cannot open", f"sqlite:///{blocker}/study.db"],
            commands=("run",),
        ),
    ]
    expect_bad_input(tmp_path, *cases)


def test_a_target_set_that_matches_nothing(make_space, tiny_model: Path, tmp_path: Path) -> None:
    """A placement no layer of the model answers to is refused before anything is made, by
    `validate` (on the model's skeleton) and by `run` (on the loaded base), not trial by
    trial; a searched choice is checked like a fixed one."""
    fixed = {"params.lora_r": 2, "params.target_modules": "everything"}
    searched = {
        "params.lora_r": {"type": "categorical", "choices": [0, 2]},
        "params.target_modules": {"type": "categorical", "choices": ["all-linear", "qkv"]},
    }
    fragments = ["target_modules", "match no linear layer", "default, attention, all-linear"]
    # (and a text metric on a classifier: checked after the model loads, so here too)
    chrf = make_space({"objectives.metric": "chrf"}, "chrf.yaml", tiny_model)
    expect_bad_input(
        tmp_path,
        Case(make_space(fixed, "fixed.yaml", tiny_model), "params.target_modules", fragments),
        Case(make_space(searched, "searched.yaml", tiny_model), "params.target_modules", fragments),
        Case(chrf, "objectives.metric", ["scores generated text", "predicts classes"], "chrf"),
    )


def test_output_directory_not_writable(make_space, tiny_model: Path, tmp_path: Path) -> None:
    # A regular file in the way: mkdir fails even as root (where chmod 555 would not stop it).
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory\n", encoding="utf-8")
    cases = [
        Case(
            make_space({"output": str(blocker / "out")}, name="under.yaml", model=tiny_model),
            "output",
            ["cannot write there"],
            str(blocker / "out"),
            commands=("run",),
        ),
        Case(
            make_space({"output": str(blocker)}, name="is_file.yaml", model=tiny_model),
            "output",
            ["cannot write there"],
            str(blocker),
            commands=("run",),
        ),
    ]
    expect_bad_input(tmp_path, *cases)


# -- task generate (its data and metric) -------------------------------------------------------


def test_bad_generation_spaces(make_space, tiny_llama: Path, tmp_path: Path) -> None:
    """A generation space without its reference column, with labels, with a class metric,
    with a reference column the data lacks, or whose references are all empty."""
    gen = {"task": "generate", "data.labels": None, "data.label_column": None}
    qa = {**gen, "data.target_column": "label", "objectives.metric": "chrf"}
    empty = _write(
        tmp_path / "empty.jsonl", [{"text": f"film {i}", "label": ""} for i in range(30)]
    )
    expect_bad_input(
        tmp_path,
        Case(make_space(gen, "no_target.yaml"), "data.target_column", ["needs the column"]),
        Case(
            make_space({**qa, "data.labels": ["neg", "pos"]}, "labels.yaml"),
            "data.labels",
            ["takes no labels"],
        ),
        Case(
            make_space({**qa, "templates": {"plain": ["{text}", "{text}"]}}, "pair.yaml"),
            "templates.plain",
            ["one-string templates", "not text pairs"],
        ),
        Case(
            make_space({**qa, "data.target_column": "answer"}, "column.yaml"),
            "data.target_column",
            ["column 'answer' is not in the train data"],
        ),
        Case(
            make_space({**qa, "data.path": str(empty)}, "empty.yaml"),
            "data.target_column",
            ["every one of the", "empty reference text"],
            "label",
        ),
        Case(
            make_space({**qa, "objectives.metric": "accuracy"}, "accuracy.yaml", tiny_llama),
            "objectives.metric",
            ["compares class ids", "task generate writes text"],
            "accuracy",
        ),
    )
