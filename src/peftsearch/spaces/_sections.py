"""The sections of ``space.yaml`` that describe the model, the data and what is scored; the
whole file (:class:`~peftsearch.spaces._schema.Space`) checks them against each other."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from peftsearch.spaces._params import Strict as _Section


class ModelSpec(_Section):
    path: str = Field(
        description="local directory, a .gguf file (dequantized on load), pkg://PACKAGE/dir, "
        "or a hub id"
    )
    max_length: int = Field(128, ge=8, le=8192, description="tokens per example, template included")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="weights dtype; training autocasts to bf16 on CUDA either way"
    )
    device: str = Field("auto", description="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    trust_remote_code: bool = Field(False, description="run code shipped with the model: opt in")
    head: Literal["classifier", "verbalizer", "generator"] = Field(
        "classifier",
        description="classifier: a new classification head; verbalizer: the pretrained LM head "
        "scores each label's words (causal LMs at the template's end, masked LMs at {mask}); "
        "generator: a causal LM or an encoder-decoder writes the answer (task: generate)",
    )


class SplitSpec(_Section):
    """Fractions of a fixed-seed stratified split, used for splits the data does not give."""

    validation: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sum(self) -> SplitSpec:
        if self.validation + self.test >= 1:
            raise ValueError(f"validation + test must be < 1, got {self.validation} + {self.test}")
        return self


class FilesSpec(_Section):
    train: str
    validation: str | None = None
    test: str | None = None


class DataSpec(_Section):
    path: str | None = Field(None, description="a csv/jsonl/parquet file, or a hub dataset name")
    files: FilesSpec | None = Field(None, description="splits given as separate files")
    subset: str | None = Field(None, description="hub dataset configuration name")
    text_columns: list[str] = Field(min_length=1, max_length=2)
    label_column: str = "label"
    labels: list[str] = Field(
        default_factory=list,
        description="label names; position = class id (the label tasks: at least 2)",
    )
    target_column: str | None = Field(
        None, description="task generate: the column holding each row's reference text"
    )
    drop_unlisted_labels: bool = Field(False, description="drop rows whose label is not listed")
    drop_duplicates: bool = Field(False, description="drop rows whose text repeats an earlier row")
    split: SplitSpec = Field(default_factory=SplitSpec)
    train_size: int | None = Field(None, ge=1, description="train rows a trial sees (subsample)")
    eval_size: int | None = Field(None, ge=1, description="validation rows a trial is scored on")
    truncation: Literal["tail", "head", "middle"] = Field(
        "tail",
        description="which part of a text longer than model.max_length is cut (tail: its end, "
        "keeping the start); only text is cut, never a template's own words or its {mask}",
    )

    @field_validator("text_columns", mode="before")
    @classmethod
    def _one_column(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("labels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({x for x in v if v.count(x) > 1})
        if dupes:
            raise ValueError(f"label names must be unique; repeated: {', '.join(dupes)}")
        return v

    @model_validator(mode="after")
    def _source(self) -> DataSpec:
        if (self.path is None) == (self.files is None):
            raise ValueError("give exactly one of `path` (one file or hub name) and `files`")
        return self


class ObjectivesSpec(_Section):
    metric: str = Field("accuracy", description="maximized; see peftsearch.objectives.METRICS")
    metric_kwargs: dict[str, Any] = Field(default_factory=dict, description="e.g. average: macro")
    cost: Literal["trainable_params"] = Field("trainable_params", description="minimized")


class GenerationSpec(_Section):
    """How a generation task decodes (``task: generate``): greedy, with the KV cache, every
    trial of a pack in one batch."""

    max_new_tokens: int = Field(
        32,
        ge=1,
        le=1024,
        description="tokens a trial may write per row; a reference longer than this is cut "
        "to it for training (search validate counts them)",
    )
