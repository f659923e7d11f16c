"""Prompt KV caches kept on disk across runs: read back bit for bit, keyed by model and prompt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from uniaudio_cli import prompt_store
from uniaudio_cli.decoding import PrefixCache, allowed_mask, continuation_logprobs, generate_constrained
from uniaudio_cli.prompt_store import PromptStore, model_fingerprint

from .test_decoding import CANDS, QUERY, V, tiny_llama

CPU = torch.device("cpu")
PROMPT = [(7 * i + 3) % V for i in range(40)]


class Counting(PrefixCache):
    runs = 0

    def _run(self, ids, cache):
        if cache is None:
            Counting.runs += 1
        return super()._run(ids, cache)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(prompt_store, "MIN_TOKENS", 8)
    return lambda model, limit=2**30: PromptStore(tmp_path / "kv", model, limit)


def outputs(prefix: PrefixCache) -> tuple[torch.Tensor, list[int]]:
    schedule = [allowed_mask(V, range(10, 40), CPU)] * 6
    return continuation_logprobs(prefix, QUERY, CANDS), generate_constrained(prefix, QUERY, schedule)


def test_a_stored_prompt_is_read_back_bit_for_bit(store) -> None:
    model = tiny_llama()
    fresh = outputs(PrefixCache(model, PROMPT, CPU, 256))
    s = store(model)
    Counting.runs = 0
    first = Counting(model, PROMPT, CPU, 256, store=s)
    assert Counting.runs == 1 and s.path(PROMPT).is_file()
    # A new store object (the next run) finds the file and runs no prompt pass.
    second = Counting(model, PROMPT, CPU, 256, store=store(model))
    assert Counting.runs == 1
    for prefix in (first, second):
        scores, tokens = outputs(prefix)
        assert torch.equal(scores, fresh[0]) and tokens == fresh[1]
    # The read-back prefix is restored between queries like a computed one.
    assert torch.equal(outputs(second)[0], fresh[0])


def test_another_model_or_prompt_misses(store) -> None:
    model, other = tiny_llama(0), tiny_llama(1)
    assert model_fingerprint(model) == model_fingerprint(tiny_llama(0))
    assert model_fingerprint(model) != model_fingerprint(other)
    # Same weights, another config (e.g. the rotary base): other logits, so another key.
    changed = tiny_llama(0)
    changed.config.rope_theta = 1234.0
    assert model_fingerprint(changed) != model_fingerprint(model)
    s = store(model)
    PrefixCache(model, PROMPT, CPU, 256, store=s)
    assert not store(other).path(PROMPT).is_file()
    assert not s.path(PROMPT[:-1]).is_file()
    # A prompt shorter than MIN_TOKENS is not worth a file.
    PrefixCache(model, PROMPT[:5], CPU, 256, store=s)
    assert not s.path(PROMPT[:5]).is_file()
    # Another model's prefix from the same folder is its own, correct one.
    Counting.runs = 0
    p = Counting(other, PROMPT, CPU, 256, store=store(other))
    assert Counting.runs == 1
    assert torch.equal(outputs(p)[0], outputs(PrefixCache(other, PROMPT, CPU, 256))[0])


def test_a_damaged_file_is_recomputed_and_replaced(store) -> None:
    model = tiny_llama()
    s = store(model)
    PrefixCache(model, PROMPT, CPU, 256, store=s)
    path = s.path(PROMPT)
    path.write_bytes(path.read_bytes()[:100])
    Counting.runs = 0
    with pytest.warns(UserWarning, match="unreadable prompt cache"):
        p = Counting(model, PROMPT, CPU, 256, store=s)
    assert Counting.runs == 1 and path.stat().st_size > 100
    assert torch.equal(outputs(p)[0], outputs(PrefixCache(model, PROMPT, CPU, 256))[0])


def test_the_least_recently_used_files_go_past_the_limit(store) -> None:
    model = tiny_llama()
    s = store(model)
    prompts = [PROMPT[i:] + PROMPT[:i] for i in range(3)]
    PrefixCache(model, prompts[0], CPU, 256, store=s)
    size = s.path(prompts[0]).stat().st_size
    s = store(model, limit=int(2.5 * size))
    for p in prompts[1:]:
        PrefixCache(model, p, CPU, 256, store=s)
    assert [s.path(p).is_file() for p in prompts] == [False, True, True]


def test_the_store_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = tiny_llama()
    monkeypatch.setenv("UNIAUDIO_HOME", str(tmp_path))
    monkeypatch.setenv("UNIAUDIO_PROMPT_CACHE", "0")
    assert PromptStore.for_model(model) is None
    monkeypatch.setenv("UNIAUDIO_PROMPT_CACHE", "1")
    monkeypatch.setenv("UNIAUDIO_PROMPT_CACHE_GB", "0.5")
    s = PromptStore.for_model(model)
    assert s is not None and s.root == tmp_path / "prompt-cache" and s.limit_bytes == 2**29
    assert not s.root.exists()  # nothing is written until a prompt is stored


def test_keys_hold_the_device_and_a_file_must_be_its_own(store) -> None:
    """CPU and CUDA round differently, so a cache is never shared between device types; a file
    under another key's name, or holding another length of prompt, is not read."""
    import shutil

    model = tiny_llama()
    s = store(model)
    cuda_like = store(model)
    cuda_like.device_type = "cuda"
    assert s.key(PROMPT) != cuda_like.key(PROMPT)
    PrefixCache(model, PROMPT, CPU, 256, store=s)
    assert s.load(PROMPT) is not None and cuda_like.load(PROMPT) is None
    # Another prompt's file copied under this prompt's name: its recorded key differs.
    other = PROMPT[1:] + PROMPT[:1]
    shutil.copy(s.path(PROMPT), s.path(other))
    assert s.load(other) is None
    # A file under the right key whose cache holds fewer tokens than the prompt is no hit.
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shorter = PROMPT[:-4]
    PrefixCache(model, shorter, CPU, 256, store=s)
    with safe_open(str(s.path(shorter)), framework="pt") as f:
        meta = dict(f.metadata())
    save_file(load_file(str(s.path(shorter))), str(s.path(PROMPT)), metadata={**meta, "key": s.key(PROMPT)})
    assert s.load(PROMPT) is None


def test_a_store_smaller_than_one_entry_keeps_the_entry_just_written(store) -> None:
    model = tiny_llama()
    s = store(model, limit=1)
    PrefixCache(model, PROMPT, CPU, 256, store=s)
    assert s.path(PROMPT).is_file() and s.load(PROMPT) is not None
    PrefixCache(model, PROMPT[1:], CPU, 256, store=s)
    assert s.path(PROMPT[1:]).is_file() and not s.path(PROMPT).is_file()


@pytest.mark.parametrize("raw", ["nan", "inf", "1e400", "-1", "0", "abc", ""])
def test_a_cache_size_that_is_no_positive_number_warns_and_keeps_the_default(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uniaudio_cli.disk_cache import limit_from_env

    monkeypatch.setenv("UNIAUDIO_TEST_CACHE_GB", raw)
    with pytest.warns(UserWarning, match=f"UNIAUDIO_TEST_CACHE_GB={raw!r} is not a positive number of GB; using 4"):
        assert limit_from_env("UNIAUDIO_TEST_CACHE_GB", 4.0) == 4 * 2**30
    monkeypatch.setenv("UNIAUDIO_TEST_CACHE_GB", "0.5")
    assert limit_from_env("UNIAUDIO_TEST_CACHE_GB", 4.0) == 2**29


def test_an_interrupted_cache_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uniaudio_cli import disk_cache

    def interrupted(tensors, path, metadata=None) -> None:
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(disk_cache, "save_tensors", interrupted)
    files = disk_cache.SafetensorsFiles(tmp_path, "test", 2**30)
    with pytest.raises(KeyboardInterrupt):
        files.write("k" * 64, {"x": torch.zeros(2)}, {}, "a test entry")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("value", "off"), [("0", True), ("false", True), ("No", True), ("off", True), ("1", False), ("yes", False)]
)
def test_cache_switches(value: str, off: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from uniaudio_cli.disk_cache import switched_off

    monkeypatch.setenv("UNIAUDIO_TEST_CACHE", value)
    assert switched_off("UNIAUDIO_TEST_CACHE") is off
