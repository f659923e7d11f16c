"""`uniaudio_cli.vocab`: no import circle between `llm` and `bridge`, old import paths still work."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import uniaudio_cli

PKG = Path(uniaudio_cli.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions (``TYPE_CHECKING`` included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_llm_and_bridge_do_not_import_each_other() -> None:
    assert not {m for m in _imported_modules(PKG / "llm.py") if m.startswith("uniaudio_cli.bridge")}
    assert not {m for m in _imported_modules(PKG / "bridge.py") if m.startswith("uniaudio_cli.llm")}
    vocab_imports = {m for m in _imported_modules(PKG / "vocab.py") if m.startswith("uniaudio_cli")}
    assert vocab_imports == set()


def test_vocab_imports_nothing_heavy() -> None:
    code = (
        "import sys, uniaudio_cli.vocab;"
        "bad = [m for m in ('torch', 'transformers', 'uniaudio_cli.llm', 'uniaudio_cli.bridge') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_old_import_paths_still_work() -> None:
    from uniaudio_cli import bridge, llm, vocab

    assert llm.Vocabulary is vocab.Vocabulary
    assert bridge.embedding_fingerprint is vocab.embedding_fingerprint


def test_fingerprint_is_cached_and_dtype_independent() -> None:
    import torch

    from uniaudio_cli.vocab import Vocabulary, embedding_fingerprint

    t = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    v = Vocabulary("toy", None, t)
    assert v.size == 5 and v.fingerprint == embedding_fingerprint(t.half())
    b = t.bfloat16()  # a bf16-stored table and its fp32 copy agree
    assert embedding_fingerprint(b) == embedding_fingerprint(b.float())
    v.embeddings = t + 1
    assert v.fingerprint == embedding_fingerprint(t)  # hashed once


def _toy_tokenizer_file(tmp_path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<s>": 0, "</s>": 1, "the": 2, "Ġdog": 3, "Ġbark": 4, "Ġ": 5, "d": 6, "o": 7, "g": 8}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="d"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_special_tokens(["<s>", "</s>"])
    tok.add_tokens(["<extra>"])  # added but not special: an ordinary token
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_token_table_agrees_with_the_transformers_tokenizer(tmp_path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    from uniaudio_cli.llm import _special_ids
    from uniaudio_cli.vocab import TokenTable

    path = _toy_tokenizer_file(tmp_path)
    table = TokenTable(path)
    full = PreTrainedTokenizerFast(tokenizer_file=str(path))
    ids = list(range(len(full)))
    assert len(table) == len(full) == 10
    assert table.convert_ids_to_tokens(ids) == full.convert_ids_to_tokens(ids)
    assert table.all_special_ids == _special_ids(table) == [0, 1] == _special_ids(full)
    assert table.encode(" dog bark", add_special_tokens=False) == full.encode(" dog bark", add_special_tokens=False)
    assert table.encode(" dog bark", add_special_tokens=False) == [3, 4]


def test_codec_vocabulary_reads_tokenizer_json_without_transformers(tmp_path: Path) -> None:
    # A local model folder with a tokenizer.json and an embedding table: what the codec needs
    # of it loads without importing transformers (1.5-2.5 s of every encode and decode).
    import torch
    from safetensors.torch import save_file

    _toy_tokenizer_file(tmp_path)
    save_file({"model.embed_tokens.weight": torch.randn(10, 4)}, str(tmp_path / "model.safetensors"))
    code = (
        "import sys; from uniaudio_cli.llm import load_vocabulary;"
        f"v = load_vocabulary({str(tmp_path)!r}, full_tokenizer=False);"
        "print(type(v.tokenizer).__name__, v.special_ids, v.size, 'transformers' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["TokenTable", "[0,", "1]", "10", "False"]
