"""The space-file schema: every bad file is a SpaceError naming file, key path and value.

Most cases load in-process (milliseconds each); a few go through the real ``search`` entry
point in a subprocess to check the one-line error, the exit code and that ``run`` makes nothing.
"""

from __future__ import annotations

import ast
import csv
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_cli, space_dict

from peftsearch.errors import SpaceError, UserError
from peftsearch.spaces import DEFAULT_PARAMS, RULES, CategoricalDist, FloatDist, load_space

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rotten_tomatoes.yaml"
DELETE = object()  # an edit value that removes the key


def edit(data: dict[str, Any], edits: dict[str, Any]) -> dict[str, Any]:
    """Apply ``{"dotted.key": value}`` edits to a nested dict (``DELETE`` removes the key)."""
    for dotted, value in edits.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return data


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """Schema checks only need the model path to be a directory: no real model is built."""
    path = tmp_path / "model"
    path.mkdir()
    return path


@pytest.fixture
def make_space(tmp_path: Path, model_dir: Path, sentiment_csv: Path):
    """Write the conftest's small valid space with dotted-key edits; return its path."""

    def make(edits: dict[str, Any] | None = None, name: str = "space.yaml") -> Path:
        data = edit(space_dict(model_dir, sentiment_csv, tmp_path / "out"), edits or {})
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return make


def space_error(path: Path, overrides: dict[str, Any] | None = None) -> SpaceError:
    with pytest.raises(SpaceError) as info:
        load_space(path, overrides)
    return info.value


def assert_names(err: SpaceError, path: Path, key: str | None, *fragments: str) -> None:
    """The error's one line is ``<file>: <key>: <message>`` and the message has ``fragments``."""
    text = str(err)
    assert err.file == str(path)
    assert err.key == key
    assert text.startswith(f"{path}: {key}: " if key else f"{path}: "), text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    assert "Value error" not in text  # pydantic's prefix is stripped
    assert "\n" not in text


# -- the file itself ---------------------------------------------------------------------------


def test_missing_space_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert_names(space_error(path), path, None, "no such file")


def test_malformed_yaml_names_line() -> None:
    path = CONFIGS / "malformed.yaml"
    assert_names(space_error(path), path, None, "malformed YAML", "line 4")


@pytest.mark.parametrize("raw", ["- model: {}\n- data: {}\n", "", "just text\n", "42\n"])
def test_top_level_must_be_mapping(tmp_path: Path, raw: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(raw, encoding="utf-8")
    assert_names(space_error(path), path, None, "must be a mapping of sections")


def test_not_a_mapping_config() -> None:
    path = CONFIGS / "not_a_mapping.yaml"
    assert_names(space_error(path), path, None, "must be a mapping")


# -- schema and rule errors --------------------------------------------------------------------

SECTIONS = "model, data, templates, verbalizers, params, objectives, study, output"
BAD = [
    # (id, edits, key, fragments, value shown as "(got ...)" or None)
    ("unknown-top", {"bogus": 1}, "bogus", ["unknown key", f"valid keys here: {SECTIONS}"], None),
    (
        "unknown-in-section",
        {"model.colour": "red"},
        "model.colour",
        [
            "unknown key",
            "valid keys here: path, max_length, dtype, device, trust_remote_code, head",
        ],
        None,
    ),
    (
        "unknown-nested",
        {"data.split": {"val": 0.1}},
        "data.split.val",
        ["valid keys here: validation, test, seed"],
        None,
    ),
    ("missing-section", {"model": DELETE}, "model", ["Field required"], None),
    ("missing-key", {"model.path": DELETE}, "model.path", ["Field required"], None),
    ("section-not-mapping", {"study": 5}, "study", ["valid dictionary"], 5),
    ("wrong-type", {"model.max_length": "abc"}, "model.max_length", ["valid integer"], "abc"),
    (
        "max-length-range",
        {"model.max_length": 4},
        "model.max_length",
        ["greater than or equal to 8"],
        4,
    ),
    ("bad-dtype", {"model.dtype": "int8"}, "model.dtype", ["'float32'", "'bfloat16'"], "int8"),
    (
        "int-low-gt-high",
        {"params.lora_r": {"type": "int", "low": 8, "high": 2}},
        "params.lora_r",
        ["`low <= high`", "low=8, high=2"],
        None,
    ),
    (
        "float-low-gt-high",
        {"params.learning_rate": {"type": "float", "low": 0.1, "high": 0.01}},
        "params.learning_rate",
        ["`low <= high`", "low=0.1, high=0.01"],
        None,
    ),
    (
        "float-log-low-zero",
        {"params.learning_rate": {"type": "float", "low": 0, "high": 0.01, "log": True}},
        "params.learning_rate",
        ["log range needs low > 0", "low=0"],
        None,
    ),
    (
        "int-log-low-zero",
        {"params.lora_r": {"type": "int", "low": 0, "high": 8, "log": True}},
        "params.lora_r",
        ["log range needs low > 0", "low=0"],
        None,
    ),
    (
        "step-with-log",
        {
            "params.learning_rate": {
                "type": "float",
                "low": 0.1,
                "high": 1,
                "log": True,
                "step": 0.1,
            }
        },
        "params.learning_rate",
        ["`step` and `log` cannot be used together"],
        None,
    ),
    (
        "step-zero",
        {"params.lora_r": {"type": "int", "low": 1, "high": 8, "step": 0}},
        "params.lora_r",
        ["`step` must be > 0"],
        None,
    ),
    (
        "empty-choices",
        {"params.lora_r": {"type": "categorical", "choices": []}},
        "params.lora_r.choices",
        ["at least 1 item"],
        [],
    ),
    (
        "dist-missing-high",
        {"params.lora_r": {"type": "int", "low": 1}},
        "params.lora_r.high",
        ["Field required"],
        None,
    ),
    (
        "dist-extra-key",
        {"params.lora_r": {"type": "int", "low": 1, "high": 8, "foo": 1}},
        "params.lora_r.foo",
        ["unknown key", "valid keys here: type, low, high, log, step"],
        None,
    ),
    (
        "int-dist-float-bound",
        {"params.lora_r": {"type": "int", "low": 1.5, "high": 8}},
        "params.lora_r.low",
        ["valid integer"],
        1.5,
    ),
    (
        "unknown-type",
        {"params.lora_r": {"type": "uniform", "low": 1, "high": 8}},
        "params.lora_r.type",
        ["'float', 'int' or 'categorical'"],
        "uniform",
    ),
    (
        "unknown-param",
        {"params.lora_rank": 4},
        "params.lora_rank",
        ["unknown parameter", "valid: " + ", ".join(RULES)],
        None,
    ),
    ("lora_r-negative", {"params.lora_r": -1}, "params.lora_r", ["must be >= 0, got -1"], None),
    (
        "lora_r-negative-choice",
        {"params.lora_r": {"type": "categorical", "choices": [0, 4, -1]}},
        "params.lora_r",
        ["must be >= 0, got -1"],
        None,
    ),
    (
        "lora_r-negative-low",
        {"params.lora_r": {"type": "int", "low": -1, "high": 4}},
        "params.lora_r",
        ["must be >= 0, got -1"],
        None,
    ),
    ("lora_r-fraction", {"params.lora_r": 2.5}, "params.lora_r", ["integer, got 2.5"], None),
    ("lora_r-bool", {"params.lora_r": True}, "params.lora_r", ["integer, got True"], None),
    (
        "lora_r-float-type",
        {"params.lora_r": {"type": "float", "low": 1, "high": 8}},
        "params.lora_r",
        ["`type: float` does not fit lora_r", "int values"],
        None,
    ),
    (
        "template-int-type",
        {"params.template": {"type": "int", "low": 0, "high": 1}},
        "params.template",
        ["`type: int` does not fit template"],
        None,
    ),
    (
        "lora_dropout-one",
        {"params.lora_dropout": 1.0},
        "params.lora_dropout",
        ["must be < 1, got 1.0"],
        None,
    ),
    (
        "learning_rate-negative-low",
        {"params.learning_rate": {"type": "float", "low": -1, "high": 0.1}},
        "params.learning_rate",
        ["must be > 0, got -1"],
        None,
    ),
    (
        "learning_rate-string",
        {"params.learning_rate": "0.1"},
        "params.learning_rate",
        ["must be a number, got '0.1'"],
        None,
    ),
    (
        "warmup-above-one",
        {"params.warmup_ratio": 1.5},
        "params.warmup_ratio",
        ["must be <= 1, got 1.5"],
        None,
    ),
    (
        "epochs-zero-low",
        {"params.epochs": {"type": "int", "low": 0, "high": 3}},
        "params.epochs",
        ["must be >= 1, got 0"],
        None,
    ),
    ("batch_size-zero", {"params.batch_size": 0}, "params.batch_size", [">= 1, got 0"], None),
    (
        "target_modules-empty",
        {"params.target_modules": []},
        "params.target_modules",
        ["module name or a list"],
        None,
    ),
    (
        "template-choice-unknown",
        {"params.template": {"type": "categorical", "choices": ["plain", "nope"]}},
        "params.template",
        ["no template named 'nope'", "templates: plain, review"],
        None,
    ),
    (
        "template-fixed-unknown",
        {"params.template": "nope"},
        "params.template",
        ["no template named 'nope'"],
        None,
    ),
    ("n_trials-zero", {"study.n_trials": 0}, "study.n_trials", ["greater than or equal to 1"], 0),
    ("timeout-zero", {"study.timeout": 0}, "study.timeout", ["greater than 0"], 0),
    (
        "data-path-and-files",
        {"data.files": {"train": "x.csv"}},
        "data",
        ["exactly one of `path`", "`files`"],
        None,
    ),
    ("data-neither", {"data.path": DELETE}, "data", ["exactly one of `path`"], None),
    (
        "labels-duplicated",
        {"data.labels": ["neg", "pos", "neg"]},
        "data.labels",
        ["must be unique", "repeated: neg"],
        ["neg", "pos", "neg"],
    ),
    ("labels-one", {"data.labels": ["neg"]}, "data.labels", ["at least 2 items"], ["neg"]),
    (
        "text-columns-three",
        {"data.text_columns": ["a", "b", "c"]},
        "data.text_columns",
        ["at most 2 items"],
        ["a", "b", "c"],
    ),
    ("text-columns-none", {"data.text_columns": []}, "data.text_columns", ["at least 1"], []),
    (
        "split-sum-one",
        {"data.split": {"validation": 0.5, "test": 0.5}},
        "data.split",
        ["validation + test must be < 1", "0.5 + 0.5"],
        None,
    ),
    (
        "split-sum-above-one",
        {"data.split": {"validation": 0.7, "test": 0.4}},
        "data.split",
        ["validation + test must be < 1"],
        None,
    ),
    (
        "split-fraction-zero",
        {"data.split": {"validation": 0}},
        "data.split.validation",
        ["greater than 0"],
        0,
    ),
    (
        "train-size-zero",
        {"data.train_size": 0},
        "data.train_size",
        ["greater than or equal to 1"],
        0,
    ),
    ("no-templates", {"templates": {}}, "templates", ["at least 1 item"], None),
    # model.head verbalizer
    (
        "head-unknown",
        {"model.head": "lm"},
        "model.head",
        ["'classifier', 'verbalizer' or 'generator'"],
        "lm",
    ),
    (
        "verbalizers-without-head",
        {"verbalizers": {"v": {"neg": "bad", "pos": "good"}}},
        "verbalizers",
        ["need model.head: verbalizer"],
        None,
    ),
    (
        "verbalizer-param-without-head",
        {"params.verbalizer": "v"},
        "params.verbalizer",
        ["needs model.head: verbalizer"],
        None,
    ),
    (
        "head-without-verbalizers",
        {"model.head": "verbalizer"},
        "verbalizers",
        ["at least one verbalizer"],
        None,
    ),
    (
        "verbalizer-missing-label",
        {"model.head": "verbalizer", "verbalizers": {"v": {"pos": ["good"]}}},
        "verbalizers.v",
        ["exactly the labels ['neg', 'pos']", "missing: ['neg']"],
        None,
    ),
    (
        "verbalizer-extra-label",
        {"model.head": "verbalizer", "verbalizers": {"v": {"neg": "x", "pos": "y", "meh": "z"}}},
        "verbalizers.v",
        ["not a label: ['meh']"],
        None,
    ),
    (
        "verbalizer-empty-words",
        {"model.head": "verbalizer", "verbalizers": {"v": {"neg": [], "pos": ["good"]}}},
        "verbalizers.v.neg",
        ["one or more non-empty words"],
        None,
    ),
    (
        "verbalizer-unknown-choice",
        {
            "model.head": "verbalizer",
            "verbalizers": {"v": {"neg": "bad", "pos": "good"}},
            "params.verbalizer": {"type": "categorical", "choices": ["v", "w"]},
        },
        "params.verbalizer",
        ["no verbalizer named 'w'", "verbalizers: v"],
        None,
    ),
    (
        "mask-with-classifier",
        {"templates": {"plain": "{text} it was {mask}"}},
        "templates.plain",
        ["{mask} needs model.head: verbalizer"],
        "{text} it was {mask}",
    ),
    (
        "mask-in-some-templates",
        {
            "model.head": "verbalizer",
            "verbalizers": {"v": {"neg": "bad", "pos": "good"}},
            "templates": {"plain": "{text} it was {mask}", "review": "review : {text}"},
        },
        "templates.review",
        ["all templates or none must have {mask}"],
        None,
    ),
    (
        "mask-twice",
        {
            "model.head": "verbalizer",
            "verbalizers": {"v": {"neg": "bad", "pos": "good"}},
            "templates": {"plain": "{mask} {text} {mask}", "review": "{text} {mask}"},
        },
        "templates.plain",
        ["{mask} may appear once"],
        None,
    ),
]


def test_verbalizer_space_defaults(make_space) -> None:
    path = make_space(
        {
            "model.head": "verbalizer",
            "verbalizers": {
                "v": {"neg": "bad", "pos": [" good", " fine"]},
                "w": {"neg": "x", "pos": "y"},
            },
            "templates": {"plain": "{text} it was {mask}", "review": "review : {text} {mask}"},
        }
    )
    space = load_space(path)
    assert space.lm_kind == "masked"
    assert space.verbalizers["v"] == {"neg": ["bad"], "pos": [" good", " fine"]}  # str -> [str]
    searched = space.search_params()["verbalizer"]
    assert searched.choices == ["v", "w"]  # searched over all of them by default
    causal = load_space(
        make_space(
            {
                "model.head": "verbalizer",
                "verbalizers": {"v": {"neg": "bad", "pos": "good"}},
                "templates": {"plain": "{text} it was", "review": "review : {text}"},
            },
            name="causal.yaml",
        )
    )
    assert causal.lm_kind == "causal"
    classifier = load_space(make_space(name="classifier.yaml"))
    assert classifier.lm_kind is None and classifier.search_params()["verbalizer"] is None


@pytest.mark.parametrize(
    ("edits", "key", "fragments", "value"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_space(make_space, edits, key, fragments, value) -> None:
    path = make_space(edits)
    err = space_error(path)
    assert_names(err, path, key, *fragments)
    if value is not None:
        assert str(err).endswith(f"(got {value!r})"), str(err)
        assert err.value == value


def test_first_problem_reported_with_count_of_the_rest(make_space) -> None:
    path = make_space({"model.max_length": "abc", "study.n_trials": 0})
    assert_names(space_error(path), path, "model.max_length", "(and 1 more problem)")


@pytest.mark.parametrize(
    ("name", "key", "fragment"),
    [
        ("unknown_param.yaml", "params.lora_rank", "unknown parameter; valid: template"),
        ("bad_template.yaml", "templates.sneaky", "attribute or index access is not allowed"),
    ],
)
def test_bad_config_files(name: str, key: str, fragment: str) -> None:
    path = CONFIGS / name
    assert_names(space_error(path), path, key, fragment)


# -- paths ----------------------------------------------------------------------------------

PATH_BAD = [
    ("model-dir-missing", {"model.path": "./nope"}, "model.path", ["no such directory"], "./nope"),
    ("data-file-missing", {"data.path": "./nope.csv"}, "data.path", ["no such file"], "./nope.csv"),
    (
        "files-train-missing",
        {"data.path": DELETE, "data.files": {"train": "./nope.csv"}},
        "data.files.train",
        ["no such file"],
        "./nope.csv",
    ),
    (
        "files-test-missing",
        {"data.path": DELETE, "data.files": {"train": "{csv}", "test": "../nope/test.csv"}},
        "data.files.test",
        ["no such file"],
        None,
    ),
    (
        "pkg-not-installed",
        {"model.path": "pkg://no_such_pkg_xyz/model"},
        "model.path",
        ["package 'no_such_pkg_xyz' is not installed", "pip install --no-deps no-such-pkg-xyz"],
        None,
    ),
    (
        "pkg-no-package",
        {"data.path": "pkg:///data.csv"},
        "data.path",
        ["names no package"],
        None,
    ),
    (
        "model-path-is-file",
        {"model.path": "{csv}"},
        "model.path",
        ["must be a model directory (or a .gguf file), not a file"],
        "{csv}",
    ),
]


@pytest.mark.parametrize(
    ("edits", "key", "fragments", "value"),
    [b[1:] for b in PATH_BAD],
    ids=[b[0] for b in PATH_BAD],
)
def test_bad_paths(make_space, sentiment_csv: Path, edits, key, fragments, value) -> None:
    def fill(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        return str(sentiment_csv) if v == "{csv}" else v

    path = make_space({k: fill(v) for k, v in edits.items()})
    err = space_error(path)
    assert_names(err, path, key, *fragments)
    if value is not None:
        assert err.value == fill(value)


def test_model_hub_id_and_data_hub_name_pass_unchanged(make_space) -> None:
    space = load_space(make_space({"model.path": "org/some-model", "data.path": "imdb"}))
    assert space.model.path == "org/some-model"
    assert space.data.path == "imdb"


def test_relative_paths_resolve_against_space_folder(
    tmp_path: Path, sentiment_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (home / "models" / "m").mkdir(parents=True)
    elsewhere.mkdir()
    (home / "train.csv").write_bytes(sentiment_csv.read_bytes())
    data = space_dict(Path("models/m"), Path("train.csv"), Path("out"))
    data["model"]["path"] = "./models/m"  # Path() would drop the "./"
    (home / "space.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.chdir(elsewhere)
    space = load_space(Path("..") / "project" / "space.yaml")
    home = home.resolve()
    assert space.model.path == str(home / "models" / "m")
    assert space.data.path == str(home / "train.csv")
    assert space.output_dir.resolve() == home / "out"
    assert space.storage_url == f"sqlite:///{home / 'out' / 'study.db'}"


def test_relative_files_resolve_against_space_folder(
    tmp_path: Path, model_dir: Path, sentiment_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "project"
    (home / "splits").mkdir(parents=True)
    for split in ("train", "validation"):
        (home / "splits" / f"{split}.csv").write_bytes(sentiment_csv.read_bytes())
    data = edit(
        space_dict(model_dir, sentiment_csv, tmp_path / "out"),
        {
            "data.path": DELETE,
            "data.files": {"train": "splits/train.csv", "validation": "./splits/validation.csv"},
        },
    )
    (home / "space.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    files = load_space(home / "space.yaml").data.files
    assert files.train == str(home.resolve() / "splits" / "train.csv")
    assert files.validation == str(home.resolve() / "splits" / "validation.csv")
    assert files.test is None


def test_relative_file_missing_beside_space_is_not_found_in_cwd(
    tmp_path: Path, model_dir: Path, sentiment_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cwd = tmp_path / "project", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    (cwd / "train.csv").write_bytes(sentiment_csv.read_bytes())  # only in the cwd
    data = edit(
        space_dict(model_dir, sentiment_csv, tmp_path / "out"),
        {"data.path": DELETE, "data.files": {"train": "train.csv"}},
    )
    (home / "space.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.chdir(cwd)
    err = space_error(home / "space.yaml")
    assert err.key == "data.files.train"


# -- defaults and derived values ----------------------------------------------------------------


def test_example_loads_and_search_params_fill_defaults() -> None:
    space = load_space(EXAMPLE)
    for value in (space.model.path, space.data.path):
        assert Path(value).is_absolute() and Path(value).exists()
        assert "site-packages" in Path(value).parts
    assert Path(space.model.path).is_dir()
    assert space.data.labels == ["rotten", "fresh"]
    params = space.search_params()
    assert list(params) == list(RULES)
    assert space.params is None  # no `params:` section: the default space of a classifier
    assert params["template"] == CategoricalDist(
        type="categorical", choices=["plain", "review", "verdict"]
    )
    for name, spec in DEFAULT_PARAMS["classifier"].items():
        assert params[name] == spec
    assert params["lora_r"].choices == [0, 1, 4, 16]
    assert params["target_modules"].choices == ["default", "all-linear"]
    assert space.study.pruner.type == "moasha" and space.study.pruner.rungs() == [0.5]
    assert space.study.coverage is True
    # Neither in the file nor in the default space: the rule defaults.
    for name in ("lora_dropout", "max_steps", "weight_decay", "lora_alpha"):
        assert params[name] == RULES[name].default


def test_search_params_defaults_when_params_omitted(make_space) -> None:
    """No `params:` section: the documented default space of the head kind, over RULES."""
    space = load_space(make_space({"params": DELETE}))
    params = space.search_params()
    assert params["template"] == CategoricalDist(type="categorical", choices=["plain", "review"])
    want = {name: rule.default for name, rule in RULES.items() if name != "template"}
    want.update(DEFAULT_PARAMS["classifier"])
    assert {k: v for k, v in params.items() if k != "template"} == want
    for name in ("learning_rate", "head_learning_rate", "prompt_learning_rate"):
        assert isinstance(params[name], FloatDist) and params[name].log
    assert params["head_learning_rate"].low > params["learning_rate"].low
    # An empty section is a space with nothing searched but the templates.
    empty = load_space(make_space({"params": {}})).search_params()
    assert {k: v for k, v in empty.items() if k != "template"} == {
        name: rule.default for name, rule in RULES.items() if name != "template"
    }


def test_minimal_config_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    space = load_space(CONFIGS / "valid_minimal.yaml")
    assert space.data.text_columns == ["text"]  # one string means one column
    assert (space.model.max_length, space.model.dtype, space.model.device) == (
        128,
        "float32",
        "auto",
    )
    assert space.model.trust_remote_code is False
    assert (space.data.label_column, space.data.split.validation, space.data.split.test) == (
        "label",
        0.1,
        0.1,
    )
    assert (space.study.n_trials, space.study.sampler, space.study.seed) == (20, "tpe", 0)
    assert space.objectives.metric == "accuracy"
    assert space.study_name == "valid_minimal"
    assert space.output_dir == Path("runs") / "valid_minimal"
    assert space.storage_url == f"sqlite:///{tmp_path.resolve() / 'runs/valid_minimal/study.db'}"


def test_study_name_defaults_to_file_stem(make_space, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    space = load_space(make_space({"output": DELETE}, name="my-study.yaml"))
    assert space.study_name == "my-study"
    assert space.output_dir == Path("runs/my-study")
    assert space.storage_url == f"sqlite:///{tmp_path.resolve() / 'runs/my-study/study.db'}"


def test_explicit_study_name_output_and_storage(make_space, tmp_path: Path) -> None:
    space = load_space(make_space({"study.name": "named", "output": DELETE}))
    assert space.study_name == "named"
    assert space.output_dir == Path("runs/named")
    space = load_space(make_space({"output": "results", "study.storage": "sqlite:///x.db"}))
    assert space.output_dir == tmp_path / "results"  # relative to the space file
    assert space.storage_url == "sqlite:///x.db"


def test_overrides_are_validated_and_applied(make_space) -> None:
    path = make_space()
    before = path.read_text(encoding="utf-8")
    space = load_space(path, {"study.n_trials": 7, "study.seed": 3})
    assert (space.study.n_trials, space.study.seed) == (7, 3)
    err = space_error(path, {"study.n_trials": 0})
    assert_names(err, path, "study.n_trials", "greater than or equal to 1")
    assert err.value == 0
    assert path.read_text(encoding="utf-8") == before  # the file is never rewritten
    space = load_space(make_space({"study": DELETE}), {"study.n_trials": 2})
    assert space.study.n_trials == 2  # an absent section is created for the override


def test_override_into_null_section_is_not_a_crash(make_space) -> None:
    path = make_space({"study": None})
    try:
        space = load_space(path, {"study.n_trials": 5})
    except SpaceError as err:
        assert err.key is not None and err.key.startswith("study")
    else:
        assert space.study.n_trials == 5


@pytest.mark.parametrize(
    ("edits", "key"),
    [
        ({"templates": {"a": 5}}, "templates.a"),
        ({"templates": {"a": ["{text}", 5]}}, "templates.a"),
        ({"params.lora_r": {"low": 1, "high": 8}}, "params.lora_r.type"),
    ],
    ids=["template-int", "template-list-int", "dist-without-type"],
)
def test_key_path_has_no_union_member_names(make_space, edits, key) -> None:
    path = make_space(edits)
    err = space_error(path)
    assert err.key == key


@pytest.mark.parametrize(
    "edits",
    [
        {"params.learning_rate": math.nan},
        {"params.lora_dropout": math.nan},
        {"params.learning_rate": {"type": "float", "low": math.nan, "high": 0.1}},
    ],
    ids=["fixed", "bounded", "dist-low"],
)
def test_nan_is_rejected(make_space, edits) -> None:
    path = make_space(edits)
    err = space_error(path)
    assert err.key is not None and err.key.startswith(next(iter(edits)))
    assert "finite" in str(err)


def test_error_is_one_line_even_for_odd_key_names(make_space) -> None:
    path = make_space({"bad\nkey": 1})
    assert "\n" not in str(space_error(path))


def test_space_error_is_a_user_error() -> None:
    err = SpaceError("s.yaml", "params.lora_r", "must be >= 0", -1)
    assert isinstance(err, UserError) and err.exit_code == 2
    assert str(err) == "s.yaml: params.lora_r: must be >= 0 (got -1)"
    assert str(SpaceError("s.yaml", None, "no such file")) == "s.yaml: no such file"


# -- the CLI (real entry point, subprocess) ----------------------------------------------------

CLI_BAD = [
    ("malformed", None, None, "line 4", []),
    ("unknown-key", {"model.colour": "red"}, "model.colour", "valid keys here", []),
    ("wrong-type", {"model.max_length": "abc"}, "model.max_length", "'abc'", []),
    ("lora_r-negative", {"params.lora_r": -1}, "params.lora_r", "must be >= 0", []),
    (
        "template-attribute",
        {"templates": {"plain": "{text.__class__}"}},
        "templates.plain",
        "attribute or index access",
        [],
    ),
    ("model-missing", {"model.path": "./nope"}, "model.path", "no such directory", []),
    ("pkg-missing", {"model.path": "pkg://no_such_pkg_xyz/m"}, "model.path", "pip install", []),
    ("n-trials-flag", {}, "study.n_trials", "(got 0)", ["--n-trials", "0"]),
]


@pytest.mark.parametrize(
    ("edits", "key", "fragment", "flags"), [c[1:] for c in CLI_BAD], ids=[c[0] for c in CLI_BAD]
)
def test_cli_bad_space_is_one_line_exit_2_and_creates_nothing(
    make_space, tmp_path: Path, edits, key, fragment, flags
) -> None:
    if edits is None:
        path = tmp_path / "space.yaml"
        path.write_text((CONFIGS / "malformed.yaml").read_text(encoding="utf-8"))
    else:
        path = make_space({"output": str(tmp_path / "out"), **edits})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    commands = [] if flags else [["validate", str(path)]]
    commands.append(["run", str(path), *flags, "--no-progress"])
    for args in commands:
        proc = run_cli(*args, cwd=cwd)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"error: {path}: {key + ': ' if key else ''}"), lines[0]
        assert fragment in lines[0]
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        assert not (tmp_path / "out").exists()
        assert list(cwd.iterdir()) == []  # no runs/ or study.db in the working directory


def test_cli_validate_renders_each_template_on_a_real_row(
    write_space, sentiment_csv: Path, tmp_path: Path
) -> None:
    path = write_space()
    proc = run_cli("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == f"{path}: ok (nothing trained, nothing written)"
    shown = {}
    for line in lines:
        if line.startswith("template "):
            name = ast.literal_eval(line.split()[1])
            shown[name] = ast.literal_eval(line.split("): ", 1)[1])
    assert set(shown) == {"plain", "review"}
    with sentiment_csv.open(newline="", encoding="utf-8") as f:
        texts = {row["text"] for row in csv.DictReader(f)}
    assert shown["plain"] in texts
    assert shown["review"] == f"review : {shown['plain']}"
    assert not (tmp_path / "out").exists()  # validate trains nothing and writes no study


def test_cli_validate_says_how_many_rows_truncation_cuts(
    write_space, tiny_model: Path, tmp_path: Path
) -> None:
    """Issue 14, part 1: per template, the rows whose text is cut and by how many tokens
    (counted against the tokenizer itself); the template's own words are kept."""
    from transformers import AutoTokenizer

    templates = {"plain": "{text}", "review": "{text} review : good or bad"}
    path = write_space(model={"path": str(tiny_model), "max_length": 8}, templates=templates)
    proc = run_cli("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = {
        ast.literal_eval(line.split()[1].rstrip(":")): line
        for line in proc.stdout.splitlines()
        if line.startswith("truncation ")
    }
    space = load_space(path)
    from peftsearch.objectives.data import load_splits

    train = load_splits(space).train
    tok = AutoTokenizer.from_pretrained(tiny_model)
    for name, template in templates.items():
        texts = [template.replace("{text}", t) for t in train["text"]]
        lengths = [len(x) for x in tok(texts)["input_ids"]]
        over = [n - 8 for n in lengths if n > 8]
        if name == "plain" and not over:
            assert "no train row is longer than model.max_length 8" in lines[name]
            continue
        assert over, "the test needs rows over max_length"
        want = f"{len(over):,} of {len(train):,} train rows"
        assert want in lines[name], lines[name]
        import statistics

        mean, median = sum(over) / len(over), statistics.median(over)
        assert f"(tokens cut: mean {mean:.1f}, median {median:g}, max {max(over):,})" in lines[name]
        assert "their text is cut at its tail" in lines[name]
    own = len(tok("review : good or bad")["input_ids"])
    assert f"the template's own words ({own} tokens) are kept" in lines["review"]


def test_cli_validate_refuses_a_template_whose_own_words_exceed_max_length(
    write_space, tiny_model: Path, tmp_path: Path
) -> None:
    templates = {"plain": "{text}", "review": "{text} " + "review : good or bad " * 3}
    path = write_space(model={"path": str(tiny_model), "max_length": 8}, templates=templates)
    proc = run_cli("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    from transformers import AutoTokenizer

    own = len(
        AutoTokenizer.from_pretrained(tiny_model)(templates["review"].format(text=""))["input_ids"]
    )
    assert f"templates.review: the template's own words take {own} tokens" in proc.stderr
    assert "more than model.max_length 8" in proc.stderr
