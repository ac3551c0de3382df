"""Data for trials: load, clean, split (fixed-seed, recorded), subsample, tokenize.

Loading goes through ``datasets`` (packaged csv/json/parquet builders work offline; a hub name
works online). Cleaning runs in pandas. What a row's answer is belongs to the space's task
(:mod:`peftsearch.objectives.tasks`): it cleans the answer column, splits (a label task keeps
the class proportions) and gives the targets a trial trains on. Every split row keeps ``row``,
its position in the cleaned table, so the split can be written down (``splits.json``) and
checked later: the search never sees test rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pandas as pd

from peftsearch.errors import SpaceError
from peftsearch.objectives import tasks
from peftsearch.objectives.tasks import Task
from peftsearch.spaces import DataSpec, Space, render

_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_COMPRESSION = (".bz2", ".gz", ".xz", ".zst", ".zip")
SPLITS = ("train", "validation", "test")


def file_format(path: str) -> str | None:
    """The ``datasets`` builder for a local file, from its suffix (compression suffix ignored)."""
    p = Path(path)
    suffixes = [s for s in p.suffixes if s not in _COMPRESSION]
    return _FORMATS.get(suffixes[-1]) if suffixes else None


@dataclass
class Splits:
    """Cleaned splits (pandas, columns: the text columns, the task's answer (``label``, a
    class id, for the label tasks), ``row``)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    trial_train: pd.DataFrame  # the subsample each trial trains on (data.train_size)
    trial_eval: pd.DataFrame  # the subsample each trial is scored on (data.eval_size)
    record: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
            "trial_train": len(self.trial_train),
            "trial_eval": len(self.trial_eval),
        }


def _load_raw(spec: DataSpec, file: str) -> dict[str, pd.DataFrame]:
    """Each split the source gives, as a DataFrame."""

    def builder(path: str, key: str) -> tuple[str, dict[str, Any]]:
        fmt = file_format(path)
        if fmt is None:
            raise SpaceError(
                file, key, "unknown file type; use .csv, .tsv, .jsonl, .json or .parquet", path
            )
        kwargs: dict[str, Any] = {"delimiter": "\t"} if ".tsv" in Path(path).suffixes else {}
        return fmt, kwargs

    try:
        if spec.files is not None:
            fmt, kwargs = builder(spec.files.train, "data.files.train")
            given = {k: getattr(spec.files, k) for k in SPLITS if getattr(spec.files, k)}
            dd = datasets.load_dataset(fmt, data_files=given, **kwargs)
        elif Path(str(spec.path)).exists():
            fmt, kwargs = builder(str(spec.path), "data.path")
            dd = datasets.load_dataset(fmt, data_files={"train": str(spec.path)}, **kwargs)
        else:  # a hub dataset
            dd = datasets.load_dataset(str(spec.path), spec.subset)
    except SpaceError:
        raise
    except Exception as exc:  # datasets raises many types; the user needs the reason
        why = f"cannot load data: {type(exc).__name__}: {exc}"
        if spec.files is not None:
            raise SpaceError(file, "data.files", why) from None
        if not Path(str(spec.path)).exists() and _offline(exc):
            why = (
                "no network: a hub dataset cannot be downloaded and is not in the local cache; "
                "use a local path (a .csv/.tsv/.jsonl/.parquet file or pkg://PACKAGE/path)"
            )
        raise SpaceError(file, "data.path", why, spec.path) from None
    return {name: dd[name].to_pandas() for name in dd if name in SPLITS}


def _offline(exc: BaseException) -> bool:
    """True when a hub load failed for want of network (HF_HUB_OFFLINE, or no connection)."""
    if datasets.config.HF_HUB_OFFLINE:
        return True
    text = str(exc).lower()
    return isinstance(exc, ConnectionError) or "offline" in text or "connect" in text


def _clean(df: pd.DataFrame, space: Space, task: Task, split: str) -> pd.DataFrame:
    """``df`` with empty texts dropped and its answer cleaned by ``task``; ``row`` numbers
    the rows kept."""
    spec, file = space.data, str(space.file)
    answers = task.target_columns(spec)
    missing = [c for c in [*spec.text_columns, *answers] if c not in df.columns]
    if missing:
        key = answers.get(missing[0], "data.text_columns")
        raise SpaceError(
            file,
            key,
            f"column {missing[0]!r} is not in the {split} data (columns: "
            + ", ".join(map(str, df.columns))
            + ")",
        )
    source = getattr(spec.files, split, None) if spec.files is not None else spec.path
    if df.empty:
        key = f"data.files.{split}" if spec.files is not None else "data.path"
        raise SpaceError(file, key, f"the {split} data has no rows", source)
    read = len(df)
    df = df[[*spec.text_columns, *answers]].dropna(subset=spec.text_columns)
    blank = df[spec.text_columns].astype(str).apply(lambda col: col.str.strip() == "").any(axis=1)
    df = df[~blank]  # empty or whitespace-only texts (csv reads "" as missing; jsonl does not)
    if df.empty:
        raise SpaceError(
            file,
            "data.text_columns",
            f"the {split} split is empty after filtering: all {read} rows have an empty text",
            list(spec.text_columns),
        )
    df = task.clean(df, spec, file, split)
    if spec.drop_duplicates:
        df = df.drop_duplicates(subset=spec.text_columns, keep="first")
    return df.reset_index(drop=True).assign(row=lambda d: range(len(d)))


def _sha256(path: str) -> str | None:
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_splits(space: Space) -> Splits:
    """Load, clean and split the data of ``space``; raise SpaceError on bad data."""
    spec, file = space.data, str(space.file)
    task = tasks.get(space.task_name)
    raw = _load_raw(spec, file)
    if "train" not in raw:
        raise SpaceError(file, "data", f"the data has no train split (splits: {', '.join(raw)})")
    clean = {name: _clean(df, space, task, name) for name, df in raw.items()}
    seed = spec.split.seed
    made: list[str] = []
    train = clean["train"]
    try:
        if "test" not in clean:
            train, clean["test"] = task.split(train, spec.split.test, seed, spec)
            made.append("test")
        if "validation" not in clean:
            frac = spec.split.validation / (1 - spec.split.test) if made else spec.split.validation
            train, clean["validation"] = task.split(train, frac, seed, spec)
            made.append("validation")
    except ValueError as exc:  # too few rows of a class to stratify
        raise SpaceError(file, "data.split", str(exc)) from None
    trial_train, trial_eval = train, clean["validation"]
    if spec.train_size is not None and spec.train_size < len(train):
        _, trial_train = task.split(train, spec.train_size, seed, spec)
    if spec.eval_size is not None and spec.eval_size < len(trial_eval):
        _, trial_eval = task.split(trial_eval, spec.eval_size, seed, spec)
    for name, df in (
        ("train", train),
        ("validation", clean["validation"]),
        ("test", clean["test"]),
    ):
        if df.empty:
            raise SpaceError(file, "data.split", f"the {name} split is empty")
    source = spec.path if spec.path is not None else spec.files.train  # type: ignore[union-attr]
    record = {
        "source": source,
        "sha256": _sha256(str(source)),
        "made_by_split": made,
        "split": spec.split.model_dump(),
        **task.record(spec),
        "rows": {
            "train": train["row"].tolist(),
            "validation": clean["validation"]["row"].tolist(),
            "test": clean["test"]["row"].tolist(),
            "trial_train": trial_train["row"].tolist(),
            "trial_eval": trial_eval["row"].tolist(),
        },
        "note": "rows index the cleaned table (after dropping unlisted labels, empty texts and "
        "duplicates) of the train source; given validation/test files index their own tables",
    }
    splits = Splits(train, clean["validation"], clean["test"], trial_train, trial_eval, record)
    record["sizes"] = splits.summary()
    return splits


@dataclass
class Encoded:
    """A tokenized split: padded to its longest row; batches trim to their own longest."""

    input_ids: Any  # LongTensor [N, T]
    attention_mask: Any  # LongTensor [N, T]
    token_type_ids: Any | None
    labels: Any  # the task's targets (class ids, LongTensor [N]); None: rows to predict
    lengths: Any  # LongTensor [N]
    positions: Any | None = None  # LongTensor [N]: the {mask} token's column (masked LMs)
    # Generation: each row's reference ids, right padded ([N, T]; ``labels`` their lengths),
    # and for a causal LM the rendered templates alone, which decoding starts from.
    targets: Any | None = None
    prompt: Encoded | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class TemplateTooLong(ValueError):
    """A template does not fit ``model.max_length``: its own words alone are longer."""


class MaskCutOff(TemplateTooLong):
    """max_length cut the ``{mask}`` slot off some rows."""


def encode(
    df: pd.DataFrame,
    template: Any,
    tokenizer: Any,
    max_length: int,
    text_columns: list[str],
    mask: bool = False,
    truncation: str = "tail",
    demos: str = "",
    targets: Any = None,
) -> Encoded:
    """Render ``template`` on every row and tokenize, at most ``max_length`` tokens a row.

    A row too long is fitted by :func:`~peftsearch.objectives.load.fit_row`: its text (and
    first the ``{demos}`` text) is cut by whole tokens on the ``truncation`` side, never
    the template's own words or its ``{mask}``, so every row keeps the template. With
    ``mask``, ``{mask}`` becomes the tokenizer's mask token and ``positions`` records where
    it landed in each row. ``demos``: what the ``{demos}`` slot holds (the same for every row).
    ``targets``: the rows' answers as the task's loss reads them (``Task.encode`` passes them).

    Raises:
        TemplateTooLong: the template's own words alone exceed ``max_length``.
        MaskCutOff: the mask token is missing from a row (a tokenizer that splits it).
    """
    rows = df[text_columns].to_dict("records")
    extra = {"demos": demos, **({"mask": tokenizer.mask_token} if mask else {})}
    rows = [{**r, **extra} for r in rows]
    rendered = [render(template, r) for r in rows]
    # One pass at max_length + 1 finds the rows that are too long (those of that length) and
    # tokenizes all the others as before; only the long rows (few, in most data) are fitted
    # and tokenized again. (A separate pass for lengths made encoding 45 % slower.)
    enc = dict(
        _tokenize(
            tokenizer,
            rendered,
            truncation=True,
            max_length=max_length + 1,
            padding="longest",
            return_tensors="pt",
        )
    )
    long = (enc["attention_mask"].sum(1) > max_length).nonzero().flatten().tolist()
    if long:
        fit = _fit_rows(
            template, [rows[i] for i in long], text_columns, tokenizer, max_length, truncation
        )
        enc = _refit(enc, long, [render(template, r) for r in fit], tokenizer, max_length)
    attention = enc["attention_mask"]
    positions = _mask_positions(enc["input_ids"], tokenizer, max_length) if mask else None
    return Encoded(
        input_ids=enc["input_ids"],
        attention_mask=attention,
        token_type_ids=enc.get("token_type_ids"),
        labels=targets,
        lengths=attention.sum(1),
        positions=positions,
    )


def _tokenize(tokenizer: Any, texts: list[Any], **kwargs: Any) -> Any:
    """``tokenizer`` on rendered rows: a row of two texts (a tuple) is a text pair."""
    if texts and isinstance(texts[0], tuple):
        first, second = zip(*texts, strict=True)
        return tokenizer(list(first), list(second), verbose=False, **kwargs)
    return tokenizer(texts, verbose=False, **kwargs)


def _fit_rows(
    template: Any,
    rows: list[dict[str, Any]],
    text_columns: list[str],
    tokenizer: Any,
    max_length: int,
    truncation: str,
) -> list[dict[str, Any]]:
    """The rows too long, their texts (and first the ``{demos}`` text) cut to fit."""
    from peftsearch.objectives.load import fit_rows

    try:
        return fit_rows(template, rows, text_columns, tokenizer, max_length, truncation, ("demos",))
    except ValueError as exc:
        raise TemplateTooLong(str(exc)) from None


def _refit(
    enc: dict[str, Any], long: list[int], rendered: list[Any], tokenizer: Any, max_length: int
) -> dict[str, Any]:
    """``enc`` (width max_length + 1) with the ``long`` rows replaced by their fitted
    ``rendered`` texts, tokenized again, and trimmed to the longest row."""
    fitted = _tokenize(
        tokenizer,
        rendered,
        truncation=True,
        max_length=max_length,
        padding="max_length",
        return_tensors="pt",
    )
    left = tokenizer.padding_side == "left"
    # width max_length + 1: only the long rows reach the last column (first, left-padded)
    keep = slice(1, None) if left else slice(0, max_length)
    for key, value in enc.items():
        value = value[:, keep].clone()
        value[long] = fitted[key]
        enc[key] = value
    width = int(enc["attention_mask"].sum(1).max())
    trim = slice(max_length - width, None) if left else slice(0, width)
    return {key: value[:, trim] for key, value in enc.items()}


def _mask_positions(input_ids: Any, tokenizer: Any, max_length: int) -> Any:
    """Each row's ``{mask}`` column (LongTensor [N]).

    Raises:
        MaskCutOff: a row without the mask token.
    """
    hits = input_ids == tokenizer.mask_token_id
    if not bool(hits.any(1).all()):
        cut = int((~hits.any(1)).sum())
        raise MaskCutOff(
            f"{{mask}} is missing from {cut} of {len(input_ids)} tokenized rows "
            f"(model.max_length {max_length}); does the tokenizer split its mask token?"
        )
    return hits.int().argmax(1)
