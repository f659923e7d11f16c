"""Shared fixtures: a tiny tokenizer/vocabulary and a tiny random codec, no downloads."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from uniaudio_cli.bridge import build_vocab_spec, codebook_tables
from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.llm import Vocabulary

WORDS = ["the", "dog", "rain", "bark", "sea", "wave", "clock", "tick", "fire", "baby", "cry", "bird"]


class TinyTokenizer:
    """Just enough of a transformers tokenizer for the bridge: ids <-> token strings."""

    def __init__(self) -> None:
        specials = ["<|endoftext|>", "<|im_start|>"]
        pieces = ["a", "b", "th", "ing", "Ġst", "Ġxq", "ĠDog", "Ġ42"]
        words = ["Ġ" + w for w in WORDS]
        fillers = [f"tok{i}" for i in range(40)]
        self.tokens = specials + pieces + words + fillers
        self.all_special_ids = [0, 1]

    def __len__(self) -> int:
        return len(self.tokens)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.tokens[i] for i in ids]


def tiny_vocabulary(seed: int = 0, name: str = "tiny-llm") -> Vocabulary:
    tok = TinyTokenizer()
    g = torch.Generator().manual_seed(seed)
    return Vocabulary(name=name, tokenizer=tok, embeddings=torch.randn(len(tok), 8, generator=g), special_ids=[0, 1])


def tiny_config(vocab: Vocabulary, n_words: int = 6) -> CodecConfig:
    spec = build_vocab_spec(vocab, n_words=n_words)
    return CodecConfig(
        backbone="small",
        latent_dim=16,
        small_dim=32,
        small_intermediate=64,
        small_encoder_layers=1,
        small_decoder_layers=1,
        codebook_sizes=[n_words, vocab.size, vocab.size],
        codebook_dims=[8, 8, 8],
        vocab=spec,
    )


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (intra-op threads only add overhead, a lot when
    the cores are busy); the previous setting is restored after each module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIAUDIO_HOME", str(tmp_path_factory.mktemp("uniaudio_home")))


@pytest.fixture()
def vocab() -> Vocabulary:
    return tiny_vocabulary()


@pytest.fixture()
def tiny_codec(vocab: Vocabulary) -> LLMCodec:
    torch.manual_seed(0)
    cfg = tiny_config(vocab)
    model = LLMCodec(cfg).eval()
    assert cfg.vocab is not None
    tables, banned = codebook_tables(cfg.vocab, vocab)
    model.set_codebooks(tables, banned)
    return model


def python_block(markdown: str) -> str:
    """The first fenced ```python block of a Markdown text (docs whose examples tests run)."""
    return re.search(r"```python\n(.*?)```", markdown, re.S).group(1)


def write_tone(path: Path, seconds: float = 1.0, sr: int = 16000, freq: float = 440.0, channels: int = 1) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * freq * t)
    data = np.stack([wav] * channels, axis=1) if channels > 1 else wav
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr)
    return path


@pytest.fixture()
def loads(models, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts model loads; the CLI's loader returns the tiny ``models`` of the requesting module."""
    calls: list[int] = []

    def load(*args, **kwargs):
        calls.append(1)
        return models

    monkeypatch.setattr("uniaudio_cli.api.load_models", load)
    return calls


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    """A tiny LLaMA and a random codec on its vocabulary (:func:`tests.test_tasks.tiny_models`),
    built once per test module."""
    from tests.test_tasks import tiny_models

    return tiny_models(tmp_path_factory.mktemp("tiny_models"))
