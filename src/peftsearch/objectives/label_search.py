"""Label words found by the model (automatic label search, after PET and LM-BFF).

``verbalizers: {auto: {k, n, rows}}`` asks for ``n`` verbalizers of ``k`` words per class,
found from the untrained LM's own scores at the prediction point of training rows:

1. For each template, the LM's log-probability of every vocabulary token at the prediction
   point of up to ``rows`` train rows per class (the search's train subsample; never
   validation or test rows), drawn with the study's seed.
2. Per template and class, the candidates are the 200 word tokens most likely on that class's
   rows (LM-BFF's first step: words the model would say there at all), ranked by the
   log-likelihood ratio ``mean log p(token | rows of the class) - mean log p(token | other
   rows)`` (PET's criterion: what tells the class apart). Each template gets its own words,
   as in PET and LM-BFF: ranked over the three SmolLM2 templates at once, the words scored
   0.420 under one of them; ranked per template, the best found verbalizer beat the best
   written one (benchmarks/RESULTS.md, "Issue 14").
3. A word token (a whole word: letters only, at least 2 of them, beginning a word) goes to
   one class only, the one where it ranks highest; words of two classes never share a first
   token, as the engine requires.
4. ``auto-i`` holds each class's words ranked ``(i-1)k+1 .. ik`` (under each template).

Deterministic given the seed (the rows drawn, then plain arithmetic); computed once per study
and stored on it (the ``auto_verbalizers`` study attribute), so every worker and every later
command (report, export, confirm) uses the same words.
"""

from __future__ import annotations

from typing import Any

import torch

CANDIDATES = 200  # likeliest word tokens per class that are ranked by the ratio


def word_tokens(tokenizer: Any, causal: bool) -> dict[int, str]:
    """Token id -> the word it spells, for tokens that are a whole word's start and that the
    tokenizer gives back as that word's first token (so a label word scores as this token)."""
    special = set(tokenizer.all_special_ids)
    out: dict[int, str] = {}
    for token, tid in tokenizer.get_vocab().items():
        if tid in special or token.startswith("##"):
            continue
        text = tokenizer.convert_tokens_to_string([token])
        word = text.strip()
        if len(word) < 2 or not word.isalpha() or not word.isascii():
            continue
        # After a causal template's end the next word follows a space: " good" must give
        # this token back (a BPE token without its space mark does not); a masked LM's
        # {mask} stands alone.
        spelled = f" {word}" if causal else word
        ids = tokenizer(spelled, add_special_tokens=False)["input_ids"]
        if ids and ids[0] == tid:
            out[tid] = spelled
    return out


def rank(
    logprobs: list[torch.Tensor], labels: torch.Tensor, n_classes: int, words: dict[int, str]
) -> list[list[tuple[int, float]]]:
    """Per class, the word tokens ranked by their mean log-likelihood ratio over the templates
    (``logprobs``: one [rows, vocab] tensor per template, rows labelled by ``labels``), best
    first, each token kept for the class where it ranks highest."""
    ids = torch.tensor(sorted(words))
    ratio = torch.zeros(n_classes, len(ids))
    likely = torch.zeros(n_classes, len(ids))
    for lp in logprobs:
        lp = lp[:, ids].float()
        for c in range(n_classes):
            inside, outside = lp[labels == c], lp[labels != c]
            ratio[c] += inside.mean(0) - outside.mean(0)
            likely[c] += inside.mean(0)
    ranked: list[list[tuple[int, float]]] = []
    for c in range(n_classes):
        top = torch.topk(likely[c], min(CANDIDATES, len(ids))).indices
        order = top[torch.argsort(ratio[c, top] / len(logprobs), descending=True, stable=True)]
        ranked.append([(int(ids[i]), float(ratio[c, i]) / len(logprobs)) for i in order])
    position = [{t: r for r, (t, _) in enumerate(ranks)} for ranks in ranked]
    return [
        [
            (t, v)
            for t, v in ranks
            if all(
                position[c][t] <= position[o].get(t, len(ids)) for o in range(n_classes) if o != c
            )
            and all(position[c][t] < position[o].get(t, len(ids)) for o in range(c))
        ]
        for c, ranks in enumerate(ranked)
    ]


def verbalizers(
    ranked: list[list[tuple[int, float]]],
    labels: list[str],
    words: dict[int, str],
    k: int,
    n: int,
) -> dict[str, dict[str, list[str]]]:
    """``auto-1`` .. ``auto-n``: each class's words ranked ``(i-1)k+1 .. ik`` (fewer when the
    ranking runs short; a verbalizer a class has no words left for is left out)."""
    out: dict[str, dict[str, list[str]]] = {}
    for i in range(n):
        chosen = {
            label: [words[t] for t, _ in ranked[c][i * k : (i + 1) * k]]
            for c, label in enumerate(labels)
        }
        if all(chosen.values()):
            out[f"auto-{i + 1}"] = chosen
    return out
