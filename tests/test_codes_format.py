"""The encoded-codes JSON (`uniaudio encode --json` / `decode`): format version, codec identity, validation."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import tiny_config, write_tone
from uniaudio_cli.bridge import codebook_tables
from uniaudio_cli.cli import app
from uniaudio_cli.codec.api import Codec, load_codec
from uniaudio_cli.codec.checkpoint import WEIGHTS_FILE, save_codec
from uniaudio_cli.codec.io import CODES_FORMAT, CODES_VERSION, CodecIdentity, EncodedClip, read_encoded
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.errors import CodecMismatchError, CodesFormatError, UsageError
from uniaudio_cli.vocab import Vocabulary


def _model(vocab: Vocabulary, seed: int) -> LLMCodec:
    torch.manual_seed(seed)
    cfg = tiny_config(vocab)
    model = LLMCodec(cfg).eval()
    assert cfg.vocab is not None
    tables, banned = codebook_tables(cfg.vocab, vocab)
    model.set_codebooks(tables, banned)
    return model


@pytest.fixture()
def codec_dirs(tmp_path: Path, vocab: Vocabulary, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Two tiny codecs for one vocabulary, differing only in their random weights."""
    monkeypatch.setattr("uniaudio_cli.codec.api.load_vocabulary", lambda llm=None, **_: vocab)
    return save_codec(_model(vocab, 0), tmp_path / "codec_a"), save_codec(_model(vocab, 1), tmp_path / "codec_b")


@pytest.fixture()
def encoded(tmp_path: Path, codec_dirs: tuple[Path, Path], vocab: Vocabulary) -> tuple[Codec, Path, dict[str, Any]]:
    """Codec A, a codes file it wrote for a 0.7 s tone, and that file's JSON object."""
    codec = load_codec(codec_dirs[0], vocabulary=vocab, device="cpu")
    clip = codec.encode_file(write_tone(tmp_path / "tone.wav", seconds=0.7))
    path = tmp_path / "tone.json"
    path.write_text(clip.to_json() + "\n")
    return codec, path, json.loads(path.read_text())


def _write(tmp_path: Path, obj: Any, name: str = "edited.json") -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_format_fields_and_round_trip(encoded: tuple[Codec, Path, dict[str, Any]], codec_dirs) -> None:
    codec, path, obj = encoded
    assert list(obj)[:2] == ["format", "version"]
    assert (obj["format"], obj["version"]) == (CODES_FORMAT, CODES_VERSION) == ("uniaudio-codes", 1)
    assert obj["sample_rate"] == 16000 and obj["num_samples"] == 11200
    weights = hashlib.sha256((codec_dirs[0] / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert obj["codec"] == {
        "source": str(codec_dirs[0]),
        "weights_sha256": weights,
        "vocabulary": codec.model.cfg.vocab.embedding_sha256,
    }
    assert codec.weights_sha256 == weights  # hashed once, at load
    [clip] = read_encoded(path)
    assert clip.codec == codec.identity and clip.codes == obj["codes"]
    assert codec.decode_clip(clip, str(path)).shape == (11200,)


def test_codes_of_another_codec_are_refused(encoded, codec_dirs, vocab: Vocabulary, tmp_path: Path) -> None:
    _, path, _ = encoded
    other = load_codec(codec_dirs[1], vocabulary=vocab, device="cpu")
    [clip] = read_encoded(path)
    with pytest.raises(CodecMismatchError) as e:
        other.decode_clip(clip, str(path))
    assert str(path) in e.value.message and str(codec_dirs[0]) in e.value.message
    assert e.value.fix == f"decode with --codec {codec_dirs[0]} that encoded it, or re-encode the audio with this codec"
    assert "\n" not in e.value.one_line()
    # The same weights in another folder are the same codec.
    copy = load_codec(shutil.copytree(codec_dirs[0], tmp_path / "copy"), vocabulary=vocab, device="cpu")
    assert copy.decode_clip(clip, str(path)).shape == (11200,)


def test_codes_for_another_vocabulary_are_refused(encoded, tmp_path: Path) -> None:
    codec, _, obj = encoded
    obj["codec"]["vocabulary"] = "0" * 64
    path = _write(tmp_path, obj)
    with pytest.raises(CodecMismatchError, match="another LLM vocabulary"):
        codec.decode_clip(read_encoded(path)[0], str(path))


def test_cli_refuses_codes_of_another_codec(tmp_path: Path, codec_dirs: tuple[Path, Path]) -> None:
    a, b = codec_dirs
    clip = write_tone(tmp_path / "in" / "x.wav")
    runner = CliRunner()
    res = runner.invoke(app, ["encode", "--codec", str(a), "--out-dir", str(tmp_path / "codes"), str(clip)])
    assert res.exit_code == 0, res.output
    codes = tmp_path / "codes" / "x.json"
    res = runner.invoke(app, ["decode", "--codec", str(b), str(codes), "-o", str(tmp_path / "x.wav")])
    assert res.exit_code == 1
    [line] = [ln for ln in res.stderr.splitlines() if "encoded by" in ln]
    assert str(codes) in line and f"fix: decode with --codec {a}" in line
    assert "Traceback" not in res.output and not (tmp_path / "x.wav").exists()
    res = runner.invoke(app, ["decode", "--codec", str(a), str(codes), "-o", str(tmp_path / "x.wav")])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"version": 2}, "uniaudio-codes version 2 is newer than this uniaudio reads"),
        ({"version": "1"}, "'version' must be a positive integer"),
        ({"version": 0}, "'version' must be a positive integer"),
        ({"format": "something-else"}, "format 'something-else' is not 'uniaudio-codes'"),
    ],
)
def test_unknown_versions_are_refused(encoded, tmp_path: Path, edit: dict[str, Any], match: str) -> None:
    _, _, obj = encoded
    path = _write(tmp_path, {**obj, **edit})
    with pytest.raises(CodesFormatError, match=match) as e:
        read_encoded(path)
    assert e.value.message.startswith(f"{path}: ")
    if edit.get("version") == 2:
        assert "upgrade uniaudio" in str(e.value.fix)


def test_unversioned_codes_are_refused_with_re_encode_fix(encoded, tmp_path: Path) -> None:
    _, _, obj = encoded
    old = {k: obj[k] for k in ("path", "sample_rate", "num_samples", "codes")}  # what uniaudio wrote before
    path = _write(tmp_path, old)
    with pytest.raises(CodesFormatError, match="without a format version") as e:
        read_encoded(path)
    assert e.value.fix == "re-encode the audio with `uniaudio encode --json`"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"codes": None}, "'codes' must be a list of non-empty integer lists"),
        ({"codes": [[1, 2], []]}, "'codes' must be a list of non-empty integer lists"),
        ({"codes": [[1, True], [2]]}, "layer 1 holds True, not a token id"),
        ({"codes": [[1], [2.5]]}, "layer 2 holds 2.5, not a token id"),
        ({"codes": [[1], [2], [-3]]}, "layer 3 holds -3, not a token id"),
        ({"codec": "codec_a"}, "'codec' must be an object"),
        ({"codec": {"source": "x", "weights_sha256": "abc", "vocabulary": None}}, "weights_sha256' must be 64"),
        ({"codec": {"source": "x", "weights_sha256": "a" * 64, "vocabulary": 7}}, "vocabulary' must be 64"),
        ({"num_samples": 0}, "'num_samples' must be a positive integer"),
        ({"sample_rate": "16k"}, "'sample_rate' must be a positive integer"),
        ({"path": 3}, "'path' must be a string"),
    ],
)
def test_malformed_fields_are_refused(encoded, tmp_path: Path, edit: dict[str, Any], match: str) -> None:
    _, _, obj = encoded
    path = _write(tmp_path, {**obj, **edit})
    with pytest.raises(CodesFormatError, match=match) as e:
        read_encoded(path)
    assert e.value.message.startswith(f"{path}: ") and "encode --json" in str(e.value.fix)


@pytest.mark.parametrize("key", ["path", "sample_rate", "num_samples", "codec", "codes"])
def test_missing_fields_are_refused(encoded, tmp_path: Path, key: str) -> None:
    _, _, obj = encoded
    path = _write(tmp_path, {k: v for k, v in obj.items() if k != key})
    with pytest.raises(CodesFormatError, match=f"missing '{key}'"):
        read_encoded(path)


def test_bad_json_is_refused_naming_the_file_and_line(encoded, tmp_path: Path) -> None:
    _, _, obj = encoded
    with pytest.raises(CodesFormatError, match=r"expected a JSON object, found list"):
        read_encoded(_write(tmp_path, [obj]))
    lines = _write(tmp_path, json.dumps(obj) + "\n{not json\n", "lines.jsonl")
    with pytest.raises(CodesFormatError, match=re.escape(f"{lines}:2: invalid JSON")):
        read_encoded(lines)
    with pytest.raises(CodesFormatError, match="empty file"):
        read_encoded(_write(tmp_path, "  \n"))
    two = _write(tmp_path, json.dumps(obj) + "\n" + json.dumps(obj) + "\n", "two.jsonl")
    assert len(read_encoded(two)) == 2
    # Still a UsageError for callers that catch those.
    assert issubclass(CodesFormatError, UsageError) and issubclass(CodecMismatchError, CodesFormatError)


def test_codes_out_of_range_are_refused(encoded, tmp_path: Path) -> None:
    codec, _, obj = encoded
    n_tokens = codec.bridge.codebook_sizes[1]
    # n_tokens: one past the last code of layers 2-3 (an off-by-one would index past the table).
    cases = [(1, 10**6, "layer 2"), (1, n_tokens, "layer 2"), (0, 0, "layer 1"), (2, 0, "layer 3")]
    for layer, bad_id, what in cases:
        # 0 is a special token (excluded) and not one of layer 1's word tokens.
        codes = [list(c) for c in obj["codes"]]
        codes[layer][0] = bad_id
        path = _write(tmp_path, {**obj, "codes": codes})
        with pytest.raises(CodesFormatError, match=f"token id {bad_id} is not a code of {what}") as e:
            codec.decode_clip(read_encoded(path)[0], str(path))
        assert e.value.message.startswith(f"{path}: ")
    assert n_tokens == codec.model.cfg.codebook_sizes[1]


def test_inconsistent_lengths_and_num_samples_are_refused(encoded, tmp_path: Path) -> None:
    codec, _, obj = encoded
    codes = [list(c) for c in obj["codes"]]
    path = _write(tmp_path, {**obj, "codes": [codes[0], codes[1], codes[2][:-1]]})
    with pytest.raises(CodesFormatError, match="inconsistent lengths"):
        codec.decode_clip(read_encoded(path)[0], str(path))
    for n in (11520 + 1, 11520 - 1920):  # the codes hold 24 frames = 11520 samples, padded to 1920
        path = _write(tmp_path, {**obj, "num_samples": n})
        with pytest.raises(CodesFormatError, match=f"num_samples {n} does not match its codes"):
            codec.decode_clip(read_encoded(path)[0], str(path))


def test_identity_of_an_unsaved_codec_and_writing_needs_one(codec_dirs, vocab: Vocabulary) -> None:
    loaded = load_codec(codec_dirs[0], vocabulary=vocab, device="cpu")
    a = Codec(loaded.model, loaded.bridge, loaded.device, "in-memory")
    b = Codec(_model(vocab, 1), loaded.bridge, loaded.device, "in-memory")
    assert a.identity.weights_sha256 == a.identity.weights_sha256 != b.identity.weights_sha256
    assert len(a.identity.weights_sha256) == 64 and a.weights_sha256 == a.identity.weights_sha256
    with pytest.raises(ValueError, match="codec identity"):
        EncodedClip("x.wav", 16000, [[1]], 100).to_json()
    ident = CodecIdentity("s", "a" * 64, None)
    assert CodecIdentity.from_obj(ident.to_obj(), "f") == ident


def test_codes_for_another_sample_rate_are_refused(encoded, tmp_path: Path) -> None:
    codec, _, obj = encoded
    path = _write(tmp_path, {**obj, "sample_rate": 8000})
    with pytest.raises(CodecMismatchError, match="codes are for 8000 Hz, this codec runs at 16000 Hz"):
        codec.decode_clip(read_encoded(path)[0], str(path))


def test_json_lines_may_hold_blank_lines(encoded, tmp_path: Path) -> None:
    _, path, _ = encoded
    line = path.read_text().strip()
    many = _write(tmp_path, f"{line}\n\n{line}\n  \n", name="two.jsonl")
    clips = read_encoded(many)
    assert len(clips) == 2 and clips[0].codes == clips[1].codes
