"""Label words found by the model (issue 14, part 3): verbalizers: {auto: {k, n, rows}}."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from peftsearch.errors import SpaceError
from peftsearch.objectives import label_search as ls
from peftsearch.objectives.runner import TrialRunner
from peftsearch.searcher import open_study, run_study
from peftsearch.spaces import load_space
from tests.objectives.test_verbalizer import write


def test_the_ratio_finds_planted_words_and_keeps_each_for_one_class() -> None:
    """Rows of class 0 make token 5 likely, class 1 tokens 7 and then 3; token 9 is the
    likeliest everywhere (a frequent word that tells nothing apart) and ranks below them;
    no token is given to both classes."""
    vocab, rows = 12, 40
    labels = torch.tensor([i % 2 for i in range(rows)])
    lp = torch.full((rows, vocab), -8.0)
    lp[:, 9] = -0.5
    lp[labels == 0, 5] = -1.0
    lp[labels == 1, 7] = -1.0
    lp[labels == 1, 3] = -3.0
    words = {t: f" w{t}" for t in range(vocab)}
    ranked = ls.rank([lp.log_softmax(-1)], labels, 2, words)
    assert ranked[0][0][0] == 5 and ranked[1][0][0] == 7 and ranked[1][1][0] == 3
    assert not {t for t, _ in ranked[0]} & {t for t, _ in ranked[1]}
    found = ls.verbalizers(ranked, ["neg", "pos"], words, k=2, n=2)
    assert found["auto-1"] == {"neg": [" w5", words[ranked[0][1][0]]], "pos": [" w7", " w3"]}
    assert set(found) == {"auto-1", "auto-2"}


def _space(folder: Path, model: Path, data: Path, kind: str = "causal", **auto):
    folder.mkdir(parents=True, exist_ok=True)
    path = write(folder, model, data, kind)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["verbalizers"]["auto"] = {"k": 2, "n": 2, "rows": 40, **auto}
    del raw["params"]["verbalizer"]  # the default: every verbalizer, found ones included
    raw["study"]["enqueue"] = [{"verbalizer": "auto-2"}]
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_space(path)


@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_found_words_are_deterministic_stored_once_and_searched(
    tmp_path, tiny_llama, tiny_mlm, sentiment_csv, kind
) -> None:
    model = tiny_llama if kind == "causal" else tiny_mlm
    space = _space(tmp_path / "a", model, sentiment_csv, kind)
    assert space.auto_names == ["auto-1", "auto-2"]
    assert space.search_params()["verbalizer"].choices[-2:] == ["auto-1", "auto-2"]
    found = TrialRunner(space).find_label_words()
    again = TrialRunner(_space(tmp_path / "b", model, sentiment_csv, kind)).find_label_words()
    assert found == again  # deterministic given the seed
    words = found["words"]  # per template: each prediction point has its own words
    assert set(words) == set(space.templates)
    assert all(set(by_name) == {"auto-1", "auto-2"} for by_name in words.values())
    assert all(len(w) == 2 for t in words.values() for v in t.values() for w in v.values())
    held = set(TrialRunner(space).splits.validation["row"]) | set(
        TrialRunner(space).splits.test["row"]
    )
    assert not set(found["rows"]) & held and len(found["rows"]) == 80
    # Every word's first token is its own class's only (the engine's rule), across both.
    runner = TrialRunner(space.with_words(words))
    for template, by_name in words.items():
        firsts: dict[int, int] = {}
        for name in by_name:
            for c, ids in enumerate(runner.label_tokens(name, template)):
                for t in ids:
                    assert firsts.setdefault(t, c) == c

    run_study(space, show_progress=False)
    study = open_study(space, create=False)
    assert study.user_attrs["auto_verbalizers"]["words"] == words
    assert "auto-1" in study.user_attrs["zero_shot"]["plain"]
    # The report shows the found words, escaped.
    import html as html_mod

    from peftsearch.reports.figures import compute_report
    from peftsearch.reports.html import render

    page = render(compute_report(study))
    table = page.split('<table id="found-words">', 1)[1].split("</table>", 1)[0]
    for template, by_name in words.items():
        for name, by_label in by_name.items():
            row = table.split(f"<tr><td>{template}</td><td>{name}</td>", 1)[1].split("</tr>")[0]
            for word in by_label["pos"]:
                assert f"<code>{html_mod.escape(repr(word))}</code>" in row
    # An exported trial of a found verbalizer is a plain space file with those words, its
    # README says they were found, and `search train` can load it.
    from peftsearch.reports.export import export_trial

    auto = next(t for t in study.trials if str(t.params.get("verbalizer", "")).startswith("auto"))
    to = export_trial(study, auto.number, tmp_path / "exp")
    exported = load_space(to / "config.yaml")
    name, template = auto.params["verbalizer"], auto.params["template"]
    assert exported.verbalizers == {name: words[template][name]}
    assert exported.auto_verbalizers is None
    readme = (to / "README.md").read_text(encoding="utf-8")
    assert f"verbalizer `{name}`, found by the model" in readme
    # A second run reads the stored words: it does not search again.
    calls = []
    real = TrialRunner.find_label_words
    TrialRunner.find_label_words = lambda self: calls.append(1) or real(self)  # type: ignore[method-assign]
    try:
        run_study(space, show_progress=False)
    finally:
        TrialRunner.find_label_words = real  # type: ignore[method-assign]
    assert calls == []


def test_auto_is_checked_like_any_key(tmp_path, tiny_llama, sentiment_csv) -> None:
    with pytest.raises(SpaceError, match=r"verbalizers.auto.k: .*greater than or equal to 1"):
        _space(tmp_path, tiny_llama, sentiment_csv, k=0)
    with pytest.raises(
        SpaceError, match=r"verbalizers.auto.words: unknown key; valid keys here: k, n, rows"
    ):
        _space(tmp_path / "x", tiny_llama, sentiment_csv, words=3)


def test_too_few_words_for_n_verbalizers_is_a_clear_error(
    tmp_path, tiny_llama, sentiment_csv
) -> None:
    space = _space(tmp_path, tiny_llama, sentiment_csv, k=20, n=10)
    want = r"verbalizers.auto: under template 'plain' the model's ranking holds \d+ words"
    with pytest.raises(SpaceError, match=want):
        TrialRunner(space).find_label_words()
