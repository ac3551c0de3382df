"""Slot-only truncation on long texts (issue 14, part 1): how many rows keep a template's
suffix, and on how many rows two templates that differ only after the text differ, before
(the whole rendered string cut at max_length, as peftsearch did up to 2026-12-01) and after
(only the text cut). Run: .venv/bin/python benchmarks/truncation_long_text.py"""

from __future__ import annotations

import sys

from peftsearch.objectives.data import encode
from peftsearch.objectives.runner import TrialRunner
from peftsearch.spaces import load_space


def old_ids(tok, template: str, texts: list[str], max_length: int) -> list[list[int]]:
    rendered = [template.format(text=t) for t in texts]
    return tok(rendered, truncation=True, max_length=max_length)["input_ids"]


def new_ids(tok, template: str, df, max_length: int, side: str) -> list[list[int]]:
    enc = encode(df, template, tok, max_length, ["text"], truncation=side)
    return [
        row[m.bool()].tolist() for row, m in zip(enc.input_ids, enc.attention_mask, strict=True)
    ]


def main(path: str = "benchmarks/space_political.yaml") -> None:
    space = load_space(path)
    runner = TrialRunner(space)
    runner.setup()
    tok, df, n = runner._tokenizer, runner.splits.train, space.model.max_length
    texts = df["text"].astype(str).tolist()
    lengths = [len(x) for x in tok(texts)["input_ids"]]
    over = sum(x > n for x in lengths)
    lengths.sort()
    print(
        f"{path}: {len(texts)} train rows, median {lengths[len(lengths) // 2]} tokens, "
        f"{over} ({100 * over / len(texts):.0f} %) over max_length {n}"
    )
    a, b = space.templates["party"], space.templates["convention"]
    suffix = tok(a.replace("{text}", "").strip(), add_special_tokens=False)["input_ids"]
    for name, ids_a, ids_b in (
        ("before (whole string cut)", old_ids(tok, a, texts, n), old_ids(tok, b, texts, n)),
        (
            f"after (text cut, {space.data.truncation})",
            new_ids(tok, a, df, n, space.data.truncation),
            new_ids(tok, b, df, n, space.data.truncation),
        ),
    ):
        kept = sum(x[-1 - len(suffix) : -1] == suffix for x in ids_a)
        differ = sum(x != y for x, y in zip(ids_a, ids_b, strict=True))
        longest = max(map(len, ids_a))
        print(
            f"  {name}: 'party' keeps its suffix on {kept}/{len(texts)} rows; 'party' and "
            f"'convention' differ on {differ}/{len(texts)} rows "
            f"({100 * differ / len(texts):.0f} %); "
            f"longest row {longest} tokens"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
