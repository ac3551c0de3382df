"""Shared fixtures: a tiny BERT built offline, a synthetic sentiment csv, and space files.

Nothing here downloads: the tokenizer is built from a vocab file written on the spot, the model
from a config (about 20k parameters), the data from word lists with a fixed seed.
"""

from __future__ import annotations

import csv
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

# A shell that starts a command in the background without job control (`nohup cmd &` in a
# script) starts it with SIGINT ignored, and children inherit that: then no Ctrl-C reaches the
# `search` processes these tests interrupt. The tests are about Ctrl-C in a terminal, so their
# children start with the default handling.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

POSITIVE = ["good", "great", "superb", "fine", "lovely", "brilliant", "moving", "fun"]
NEGATIVE = ["bad", "awful", "dull", "poor", "boring", "weak", "messy", "flat"]
FILLER = ["the", "film", "movie", "was", "a", "plot", "story", "and", "very", "it", "cast"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [*POSITIVE, *NEGATIVE, *FILLER, "review", ":", "verdict", "?", "premise", "says"]

# The tiny model's shape, used by parameter-count tests.
HIDDEN, LAYERS, LABELS = 16, 2, 2


def _vocab(path: Path) -> str:
    """The tiny word-piece vocabulary written into ``path`` (made if missing); its file."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
    return str(vocab)


def _tiny_bert(path: Path) -> tuple[Any, Any]:
    """The tiny BERT's tokenizer (vocab written into ``path``) and config; seeds torch."""
    import torch
    from transformers import BertConfig, BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab=_vocab(path), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
    )
    return tokenizer, config


def make_tiny_model(path: Path) -> Path:
    """Save a 2-layer, hidden-16 BERT for sequence classification and its tokenizer to ``path``."""
    from transformers import BertForSequenceClassification

    tokenizer, config = _tiny_bert(path)
    config.num_labels = LABELS
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_llama(path: Path) -> Path:
    """A 2-layer, hidden-16 Llama causal LM and a word-level tokenizer (BOS first, no EOS: the
    prediction point is the last word), saved to ``path``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        intermediate_size=32,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def _word_tokenizer(vocab: dict[str, int], single: str, specials: list[tuple[str, int]]) -> Any:
    """A word-level fast tokenizer over ``vocab`` whose post-processor writes ``single``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=specials)
    return tok


def make_tiny_t5(path: Path) -> Path:
    """A 2-layer, d_model-16 T5 (encoder-decoder) and a word-level tokenizer (EOS last, as
    T5's own), saved to ``path``."""
    import torch
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    path.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    tok = _word_tokenizer(vocab, "$A </s>", [("</s>", 1)])
    PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    ).save_pretrained(path)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(vocab),
        d_model=HIDDEN,
        d_kv=8,
        d_ff=32,
        num_layers=LAYERS,
        num_decoder_layers=LAYERS,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    T5ForConditionalGeneration(config).save_pretrained(path)
    return path


def make_tiny_bart(path: Path) -> Path:
    """A 2-layer, d_model-16 BART and a word-level tokenizer (``<s> ... </s>``), saved to
    ``path``."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<s>", "<pad>", "</s>", "<unk>", *WORDS])}
    tok = _word_tokenizer(vocab, "<s> $A </s>", [("<s>", 0), ("</s>", 2)])
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    ).save_pretrained(path)
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=len(vocab),
        d_model=HIDDEN,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=128,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    BartForConditionalGeneration(config).save_pretrained(path)
    return path


def make_pairs_csv(path: Path, n: int = 300, seed: int = 0) -> Path:
    """A learnable text-to-text csv (question,answer): the answer names the review's verdict
    word and whether it is good or bad."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer"])
        for _ in range(n):
            pos = rng.random() < 0.5
            word = rng.choice(POSITIVE if pos else NEGATIVE)
            words = rng.sample(FILLER, 4) + [word]
            rng.shuffle(words)
            w.writerow([" ".join(words), f"{word} {'good' if pos else 'bad'}"])
    return path


def make_tiny_mlm(path: Path) -> Path:
    """A 2-layer, hidden-16 BERT masked LM with the tiny BERT's tokenizer (it has [MASK])."""
    from transformers import BertForMaskedLM

    tokenizer, config = _tiny_bert(path)
    tokenizer.save_pretrained(path)
    BertForMaskedLM(config).save_pretrained(path)
    return path


def make_sentiment_csv(path: Path, n: int = 400, seed: int = 0) -> Path:
    """A learnable two-class csv (text,label) with labels 'neg'/'pos', balanced-ish."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            pos = rng.random() < 0.55
            words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if pos else NEGATIVE)]
            rng.shuffle(words)
            w.writerow([" ".join(words) + f" {i % 7}", "pos" if pos else "neg"])
    return path


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


@pytest.fixture(scope="session")
def tiny_bart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bart(tmp_path_factory.mktemp("tiny_bart"))


@pytest.fixture(scope="session")
def pairs_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pairs_csv(tmp_path_factory.mktemp("pairs") / "pairs.csv")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


def make_tiny_distilbert_mlm(path: Path) -> Path:
    """A 2-layer, dim-16 DistilBERT masked LM (its LM head is three modules: vocab_transform,
    vocab_layer_norm, vocab_projector) with a DistilBERT tokenizer (no token_type_ids)."""
    import torch
    from transformers import DistilBertConfig, DistilBertForMaskedLM, DistilBertTokenizerFast

    DistilBertTokenizerFast(vocab=_vocab(path), do_lower_case=True).save_pretrained(path)
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        dim=HIDDEN,
        n_layers=LAYERS,
        n_heads=2,
        hidden_dim=32,
        max_position_embeddings=128,
    )
    DistilBertForMaskedLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_distilbert_mlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_distilbert_mlm(tmp_path_factory.mktemp("tiny_distilbert_mlm"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_mlm(tmp_path_factory.mktemp("tiny_mlm"))


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sentiment_csv(tmp_path_factory.mktemp("data") / "sentiment.csv")


def space_dict(model: Path, data_file: Path, out_dir: Path, /, **sections: Any) -> dict[str, Any]:
    """A small valid space (tiny model, synthetic data); ``sections`` replace whole sections."""
    space: dict[str, Any] = {
        "model": {"path": str(model), "max_length": 32},
        "data": {
            "path": str(data_file),
            "text_columns": ["text"],
            "label_column": "label",
            "labels": ["neg", "pos"],
            "train_size": 160,
            "eval_size": 60,
        },
        "templates": {"plain": "{text}", "review": "review : {text}"},
        "params": {
            "template": {"type": "categorical", "choices": ["plain", "review"]},
            "prompt_length": {"type": "categorical", "choices": [0, 2]},
            "lora_r": {"type": "categorical", "choices": [0, 2, 4]},
            "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            "batch_size": 16,
        },
        "study": {"n_trials": 3, "seed": 0},
        "output": str(out_dir),
    }
    space.update(sections)
    return plain_study(space)


def plain_study(space: dict[str, Any]) -> dict[str, Any]:
    """``space`` with successive halving and the coverage trials off unless its study section
    names them: they change which trials run and complete, and their own tests
    (tests/searcher/test_pruner.py) turn them on."""
    if isinstance(space.get("study"), dict):
        space["study"] = {"pruner": "none", "coverage": False, **space["study"]}
    return space


@pytest.fixture
def write_space(tmp_path: Path, tiny_model: Path, sentiment_csv: Path):
    """Write a space file; keyword sections replace the defaults of :func:`space_dict`."""

    def write(name: str = "space.yaml", raw: str | None = None, **sections: Any) -> Path:
        path = tmp_path / name
        if raw is not None:
            path.write_text(raw, encoding="utf-8")
        else:
            data = space_dict(tiny_model, sentiment_csv, tmp_path / "out", **sections)
            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return write


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``search ARGS`` in a subprocess (the real entry point), capturing output."""
    return subprocess.run(
        [sys.executable, "-m", "peftsearch", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread here and in subprocesses (OMP_NUM_THREADS): the tiny model trains in
    well under a second on one, while torch's default thread per core contends with other
    processes on a busy 2-core machine and takes 10-50x longer."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(before)
