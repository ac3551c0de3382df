"""Build ``math_qa.csv``: short arithmetic questions with exact answers, from DeepMind's generator.

Source: ``mathematics-dataset==1.0.1`` (PyPI, Apache-2.0; DeepMind), used only to generate the
rows. Install it and its small dependencies first with

    pip install --no-deps mathematics-dataset==1.0.1 six absl-py

(numpy and sympy must also be installed), then run ``python examples/data/build_math_qa.py``;
the CSV is written next to this file.

``ROWS_PER_MODULE`` questions come from each module in ``MODULES``, at the "train-easy"
difficulty (the lowest third of each module's entropy range, as in the package's
``generate.py --train_split``). As there, questions longer than 160 characters or answers longer
than 30 are resampled, and so are questions already drawn (a safeguard: with ``SEED = 0`` no
sample is long or repeated). The rows are then shuffled. The generator draws from Python's and
numpy's global random states, which are both seeded, so two runs write the same bytes.

Answers are written as the generator prints them (``str`` of a sympy number or bool, e.g. "0.2",
"-2/9", "True", "-17.4"). Because the column mixes such forms, ``pandas.read_csv`` reads it as
strings either way, unchanged.
"""

from __future__ import annotations

import csv
import importlib
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

SEED = 0
ROWS_PER_MODULE = 1000
MODULES = [("comparison", "pair"), ("arithmetic", "add_or_sub"), ("numbers", "round_number")]
MAX_QUESTION_LENGTH = 160  # mathematics_dataset.generate_settings
MAX_ANSWER_LENGTH = 30
OUT = Path(__file__).with_name("math_qa.csv")


def load_train_modules() -> dict:
    """``mathematics_dataset.modules.modules.train`` at the train-easy difficulty."""
    # mathematics-dataset 1.0.1 imports base_solution_linear from sympy.solvers.diophantine,
    # which newer sympy (1.14) only has in its submodule; re-export it before the import. The
    # package module is taken from importlib: ``import sympy.solvers.diophantine as d`` would
    # bind sympy.solvers' *function* diophantine instead.
    diophantine = importlib.import_module("sympy.solvers.diophantine")
    solver = importlib.import_module("sympy.solvers.diophantine.diophantine")
    diophantine.base_solution_linear = solver.base_solution_linear
    from mathematics_dataset.modules import modules

    def train_easy(entropy: tuple[float, float]) -> tuple[float, float]:
        low, high = entropy
        return low, low + (high - low) / 3

    return modules.train(train_easy)


def sample(generate: Callable, seen: set[str]) -> tuple[str, str]:
    """One new (question, answer) within the package's length limits."""
    while True:
        problem = generate()
        question, answer = str(problem.question), str(problem.answer)
        too_long = len(question) > MAX_QUESTION_LENGTH or len(answer) > MAX_ANSWER_LENGTH
        if not too_long and question not in seen:
            seen.add(question)
            return question, answer


def build_rows() -> list[dict[str, str]]:
    train = load_train_modules()
    random.seed(SEED)
    np.random.seed(SEED)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for group, name in MODULES:
        generate = train[group][name]
        for _ in range(ROWS_PER_MODULE):
            question, answer = sample(generate, seen)
            rows.append({"question": question, "answer": answer, "module": f"{group}__{name}"})
    random.Random(SEED).shuffle(rows)
    return rows


def main() -> None:
    rows = build_rows()
    with OUT.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "answer", "module"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
