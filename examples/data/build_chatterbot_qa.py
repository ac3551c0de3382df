"""Build ``chatterbot_qa.csv``: short question -> answer pairs from the ChatterBot corpus.

Source: the English YAML files of ``chatterbot-corpus==1.3.3`` (PyPI, BSD-3-Clause), which are
only read here; the package is not imported. Install it first with

    pip install --no-deps chatterbot-corpus==1.3.3

then run ``python examples/data/build_chatterbot_qa.py``; the CSV is written next to this file.

Each ``chatterbot_corpus/data/english/<topic>.yml`` holds ``conversations: [[turn, turn, ...]]``.
Every consecutive pair of turns (i, i + 1) becomes one (question, answer) row, with the file's
stem as ``topic``. Conversations that are not lists are skipped (one malformed trivia entry),
pairs where either side is not a non-empty string are dropped, both sides are stripped of
surrounding whitespace, exact duplicate (question, answer) pairs keep their first occurrence,
and answers longer than ``MAX_ANSWER_WORDS`` words are dropped. Rows keep corpus order (files
sorted by name, then conversation and turn order), so the output is deterministic and needs no
random seed.
"""

from __future__ import annotations

import csv
import importlib.util
from itertools import pairwise
from pathlib import Path

import yaml

MAX_ANSWER_WORDS = 40
OUT = Path(__file__).with_name("chatterbot_qa.csv")


def corpus_dir() -> Path:
    """The installed corpus's English folder, found without importing the package."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps chatterbot-corpus==1.3.3 first")
    return Path(spec.submodule_search_locations[0]) / "data" / "english"


def build_rows(folder: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for path in sorted(folder.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            if not isinstance(conversation, list):
                # trivia.yml has one entry missing its inner "- ", which YAML reads as a single
                # string; pairing its characters would make junk rows such as ("I", "n").
                continue
            for question, answer in pairwise(conversation):
                if not (isinstance(question, str) and isinstance(answer, str)):
                    continue
                question, answer = question.strip(), answer.strip()
                if not question or not answer or (question, answer) in seen:
                    continue
                seen.add((question, answer))
                if len(answer.split()) > MAX_ANSWER_WORDS:
                    continue
                rows.append({"question": question, "answer": answer, "topic": path.stem})
    return rows


def main() -> None:
    rows = build_rows(corpus_dir())
    with OUT.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "answer", "topic"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
