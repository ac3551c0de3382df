"""Build ``de_en.csv``: German -> English sentence pairs from the Ding dictionary.

Source: ``/usr/share/trans/de-en`` of the Debian package ``trans-de-en`` 1.9-6 (the "devel
2023-01-30" version of Frank Richter's German-English dictionary, https://dict.tu-chemnitz.de/;
GPL-2+). The file is only read here. Install it first with

    apt-get install trans-de-en=1.9-6

then run ``python examples/data/build_de_en.py``; the CSV is written next to this file. Another
copy of the dictionary can be given as the first argument. A source whose sha256 differs from
``SOURCE_SHA256`` is still read, with a warning, as it will give other rows.

The CSV is a derived work of the dictionary and is under the same license, GPL-2+ (see
``trans_de_en.LICENSE.txt``).

Each entry line is ``German :: English``; ``#`` lines are comments. On each side ``|`` separates
senses (the i-th German part translates the i-th English part) and ``;`` separates synonyms. An
entry is used only where both sides have the same number of ``|`` parts (in 1.9-6 they all do),
and part i is paired with part i. In each part the annotations ``{...}`` (gender, part of
speech), ``[...]`` (register, region, field) and ``<...>`` (search keys) are removed, the first
synonym is kept and whitespace is collapsed. A pair is kept when it is a full sentence pair:

- the German side starts with an upper-case letter, the English side does not start with a
  lower-case one, and both end with ``.``, ``?`` or ``!``;
- each side has ``MIN_WORDS`` to ``MAX_WORDS`` words (split on whitespace);
- no bracket of any kind is left: neither an unclosed annotation nor ``(...)``, which marks
  optional or explanatory text (e.g. "Den Abschluss (des Berichts) bildet ein Anhang.");
- no ``/`` (inline alternatives such as "comes/arrives"), no ``…`` or ``..`` (gaps to fill in
  and one doubled full stop) and no placeholder (``etw.``, ``jd.``, ``jdm.``, ``jdn.``, ``jdr.``,
  ``jds.``, ``sb.``, ``sth.``);
- its German text has not been seen before (the first occurrence is kept).

Text is kept as it is in the dictionary (typographic and ASCII apostrophes both occur). Of the
pairs that pass, ``MAX_ROWS`` are drawn with ``random.Random(SEED).sample`` from the pairs in
dictionary order, and written in the drawn (random) order, so two runs write the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
import sys
from pathlib import Path

SOURCE = Path("/usr/share/trans/de-en")
SOURCE_SHA256 = "34052c6021d09eadfee7a893a789204265954df70fe9c36d38fa00058d79d326"
SEED = 0
MAX_ROWS = 3000
MIN_WORDS, MAX_WORDS = 4, 20
OUT = Path(__file__).with_name("de_en.csv")

ANNOTATION = re.compile(r"\s*(?:\{[^{}]*\}|\[[^\[\]]*\]|<[^<>]*>)")
LEFTOVER = re.compile(r"[\[\]{}<>()/…]|\.\.")
PLACEHOLDER = re.compile(r"\b(?:etw|jd[mnrs]?|sb|sth)\.")
SENTENCE_END = (".", "?", "!")
OPENING, CLOSING = "([{<", ")]}>"


def split_top(text: str, sep: str) -> list[str]:
    """``text`` split on ``sep`` outside brackets (annotations such as ``{dealt; dealt}`` and
    ``(Arbeit; Auftrag)`` hold separators of their own)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char in OPENING:
            depth += 1
        elif char in CLOSING:
            depth = max(0, depth - 1)
        if char == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def clean(text: str) -> str:
    """``text`` without annotations and with single spaces."""
    return " ".join(ANNOTATION.sub("", text).split())


def first_synonym(part: str) -> str:
    return clean(split_top(clean(part), ";")[0])


def is_sentence_pair(de: str, en: str) -> bool:
    if not (de[:1].isupper() and not en[:1].islower()):
        return False
    if not (de.endswith(SENTENCE_END) and en.endswith(SENTENCE_END)):
        return False
    if not all(MIN_WORDS <= len(side.split()) <= MAX_WORDS for side in (de, en)):
        return False
    text = f"{de} {en}"
    return not (LEFTOVER.search(text) or PLACEHOLDER.search(text))


def sentence_pairs(lines: list[str]) -> list[tuple[str, str]]:
    """All full sentence pairs, in dictionary order, one per German sentence."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        german, english = line.split(" :: ")
        de_parts, en_parts = split_top(german, "|"), split_top(english, "|")
        if len(de_parts) != len(en_parts):
            continue
        for de_part, en_part in zip(de_parts, en_parts, strict=True):
            de, en = first_synonym(de_part), first_synonym(en_part)
            if is_sentence_pair(de, en) and de not in seen:
                seen.add(de)
                pairs.append((de, en))
    return pairs


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    if not source.is_file():
        raise SystemExit(f"{source} not found: apt-get install trans-de-en=1.9-6 first")
    data = source.read_bytes()
    if hashlib.sha256(data).hexdigest() != SOURCE_SHA256:
        print(f"warning: {source} is not trans-de-en 1.9-6's; the rows will differ")
    pairs = sentence_pairs(data.decode("utf-8").split("\n"))
    rows = random.Random(SEED).sample(pairs, min(MAX_ROWS, len(pairs)))
    with OUT.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["de", "en"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} of {len(pairs)} sentence pairs to {OUT}")


if __name__ == "__main__":
    main()
