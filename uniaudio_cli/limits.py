"""What fits an LLM's context, known before any model loads.

The commands refuse audio too long for the LLM's context before they load the models (seconds,
not the load's ten): the LLM's context length and the codec's token rates are read here from
config files, without torch (a Hugging Face model id's from the local Hugging Face cache; a
published ``.pth`` codec's rates are its architecture's). Where a source cannot be read this way
(a model id not cached, a GGUF not converted yet), the answer is ``None`` and the tasks' own
checks, after loading, apply.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

# SmolLM2-135M-Instruct, the embedded default LLM (its GGUF is pinned by SHA-256; the
# integration tests compare this with the loaded model's).
DEFAULT_CONTEXT_LENGTH = 8192
# The fix for a whole clip too long for the LLM's context.
TOO_LONG_FIX = "cut it into shorter clips, or read part of it with --crop SECONDS"
# The fix for a classification prompt too long for the LLM's context.
PROMPT_FIX = "use fewer --shots/--repeats, a shorter --crop, --layers semantic, or an LLM with a longer context"


def _llm_folder(llm: str | None) -> Path | None:
    """The folder holding ``--llm``'s config and tokenizer files: the converted folder of a GGUF
    (the default's too), or the model folder itself; ``None`` for a Hub id or a GGUF not
    converted yet."""
    from uniaudio_cli.llm import _gguf_cache, default_gguf_path

    try:
        p = default_gguf_path(install=False) if llm is None else Path(llm).expanduser()
        if p.suffix == ".gguf" and p.is_file():
            p = _gguf_cache(p)  # reading the GGUF's own header takes seconds
        if p.is_dir():
            return p
        return _hub_cache_folder(str(llm)) if llm is not None and not p.exists() else None
    except Exception:  # not installed, unreadable: the load reports it, with its fix
        return None


def _hub_cache_folder(model_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot folder of a Hub id (e.g.
    ``meta-llama/Llama-2-7b-hf``) holding its ``config.json``, looked up without the network;
    ``None`` when it is not cached."""
    if model_id.count("/") > 1 or model_id.startswith((".", "/", "~")):
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def llm_context_length(llm: str | None) -> int | None:
    """The context length of ``--llm`` (``None``: the embedded default), or ``None`` when it
    cannot be read without loading (a Hub model id not in the local cache, a GGUF file not
    converted yet, an unreadable config)."""
    if llm is None:
        return DEFAULT_CONTEXT_LENGTH
    folder = _llm_folder(llm)
    try:
        config = json.loads((folder / "config.json").read_text()) if folder is not None else None
        # Only the key itself: other architectures name it otherwise (n_positions, n_ctx), and a
        # guessed length could refuse what fits. Without it, the check waits for the load.
        return int(config["max_position_embeddings"]) if config and config.get("max_position_embeddings") else None
    except Exception:  # a broken file is reported, with its fix, by the load itself
        return None


class CountingTokenizer:
    """``--llm``'s tokenizer as :class:`~uniaudio_cli.prompts.PromptBuilder` uses it, read with
    the ``tokenizers`` library from ``tokenizer.json`` (no transformers, no torch), to count a
    prompt's tokens before the model loads. It adds no BOS, so a count may be one short: a
    check with it never refuses what fits."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)


def counting_tokenizer(llm: str | None) -> CountingTokenizer | None:
    """:class:`CountingTokenizer` of ``--llm`` (``None``: the embedded default), or ``None``
    where it has no ``tokenizer.json`` at hand (a Hub id not cached, a GGUF not converted yet)."""
    folder = _llm_folder(llm)
    if folder is None or not (folder / "tokenizer.json").is_file():
        return None
    try:
        return CountingTokenizer(_tokenizer(str(folder / "tokenizer.json")))
    except Exception:  # an unreadable file: the load reports it, with its fix
        return None


def text_tokens(llm: str | None, text: str) -> int | None:
    """How many tokens ``--llm``'s tokenizer makes of ``text`` (no special tokens); ``None``
    without its ``tokenizer.json``."""
    tokenizer = counting_tokenizer(llm)
    try:
        return None if tokenizer is None else len(tokenizer.encode(text))
    except Exception:
        return None


@lru_cache(maxsize=4)
def _tokenizer(path: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def codec_token_rates(codec: str | Path | None) -> tuple[float, float] | None:
    """``(tokens per second of all layers, of layer 1)`` of ``--codec`` (``None``: the default
    checkpoint; a published ``.pth``: the released config's rates), or ``None`` for an
    unreadable folder."""
    from uniaudio_cli.codec.config import CodecConfig
    from uniaudio_cli.paths import default_codec_path

    if codec is not None and Path(codec).suffix in (".pth", ".pt", ".ckpt"):
        # The published codec's rates are fixed by its architecture (hop 480, strides 4/2/1);
        # the file's tensors set only its codebook sizes.
        cfg = CodecConfig(backbone="published")
        return cfg.tokens_per_second, cfg.frame_rate / cfg.vq_strides[0]
    folder = Path(codec) if codec is not None else default_codec_path()
    try:
        cfg = CodecConfig.load(folder / "config.json")
    except Exception:  # the load reports it, with its fix
        return None
    return cfg.tokens_per_second, cfg.frame_rate / cfg.vq_strides[0]


def context_overflow(seconds: float, rate: float, context: int) -> str | None:
    """What is wrong when ``seconds`` of audio read at ``rate`` tokens/s alone overflow an LLM
    ``context`` (for an error message), else ``None``."""
    if seconds * rate <= context:
        return None
    return (
        f"{_count(seconds)} s is about {_count(seconds * rate)} tokens, more than the LLM's context of {context} "
        f"(about {context / rate:.0f} s)"
    )


def _count(x: float) -> str:
    return f"{x:.0f}" if x < 1e9 else f"{x:.3g}"
