"""`uniaudio encode` / `decode` end to end on a tiny codec (the LLM vocabulary is patched in)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from tests.conftest import write_tone
from uniaudio_cli.cli import app
from uniaudio_cli.codec.checkpoint import save_codec


@pytest.fixture()
def codec_dir(tmp_path: Path, tiny_codec, vocab, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("uniaudio_cli.codec.api.load_vocabulary", lambda llm=None, **_: vocab)
    return save_codec(tiny_codec, tmp_path / "codec")


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def test_encode_text_json_and_decode(tmp_path: Path, codec_dir: Path) -> None:
    clip = write_tone(tmp_path / "in" / "tone.wav", seconds=0.7)
    res = run("encode", "--codec", str(codec_dir), str(clip))
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert [line[:3] for line in lines] == ["L1:", "L2:", "L3:"]
    res = run("encode", "--codec", str(codec_dir), "--json", str(clip))
    obj = json.loads(res.stdout)
    assert obj["path"] == str(clip) and obj["sample_rate"] == 16000
    assert [len(c) for c in obj["codes"]] == [6, 12, 24]  # 0.7 s pads to 1.2 s = 24 frames
    codes = tmp_path / "tone.json"
    codes.write_text(res.stdout)
    out = tmp_path / "out.wav"
    res = run("decode", "--codec", str(codec_dir), str(codes), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert res.stdout == f"{codes}\t{out}\n"  # one line per file written, as the other commands
    info = sf.info(out)
    assert info.samplerate == 16000 and info.frames == int(0.7 * 16000)
    # No overwrite without --force: one line, exit 2 (usage).
    res = run("decode", "--codec", str(codec_dir), str(codes), "-o", str(out))
    assert res.exit_code == 2 and "--force" in res.stderr
    assert run("decode", "--codec", str(codec_dir), str(codes), "-o", str(out), "--force").exit_code == 0
    # Other rates and channel counts are converted, and the run says so once.
    stereo = tmp_path / "in" / "stereo.wav"
    sf.write(stereo, np.zeros((22050, 2), dtype=np.float32) + 0.1, 44100)
    res = run("encode", "--codec", str(codec_dir), str(stereo))
    assert res.exit_code == 0, res.output
    assert "note: the codec reads 16 kHz mono; 1 input(s) are not" in res.stderr
    assert "(44100 Hz, 2 channels); they are converted" in res.stderr
    assert "note:" not in run("encode", "--codec", str(codec_dir), str(clip)).stderr


def test_decode_out_dir_plans_one_file_per_clip_before_loading(tmp_path: Path, codec_dir: Path) -> None:
    """A JSONL of two clips writes <stem>_000.wav and <stem>_001.wav: those are the names checked
    before the codec loads, and a clash with another input's output is refused, not overwritten."""
    clip = write_tone(tmp_path / "in" / "tone.wav", seconds=0.5)
    one = run("encode", "--codec", str(codec_dir), "--json", str(clip)).stdout
    (tmp_path / "x.jsonl").write_text(one + one)
    (tmp_path / "x_000.json").write_text(one)
    out = tmp_path / "out"
    res = run(
        "decode",
        "--codec",
        str(codec_dir),
        str(tmp_path / "x.jsonl"),
        str(tmp_path / "x_000.json"),
        "--out-dir",
        str(out),
        "--force",
    )
    assert res.exit_code == 2 and "x_000.wav: 2 inputs would write this one output" in res.stderr, res.output
    twice = run(
        "decode",
        "--codec",
        str(codec_dir),
        str(tmp_path / "x_000.json"),
        str(tmp_path / "x_000.json"),
        "--out-dir",
        str(out),
    )
    assert twice.exit_code == 2 and "x_000.wav: 2 inputs would write this one output" in twice.stderr
    out.mkdir()
    (out / "x_001.wav").write_bytes(b"kept")
    res = run("decode", "--codec", str(codec_dir), str(tmp_path / "x.jsonl"), "--out-dir", str(out))
    assert res.exit_code == 2 and "x_001.wav: exists" in res.stderr and "loading" not in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["x_001.wav"]
    res = run("decode", "--codec", str(codec_dir), str(tmp_path / "x.jsonl"), "--out-dir", str(out), "--force")
    assert res.exit_code == 0 and res.stdout.count("\t") == 2
    assert sorted(p.name for p in out.iterdir()) == ["x_000.wav", "x_001.wav"]


def test_batch_goes_on_past_bad_files(tmp_path: Path, codec_dir: Path) -> None:
    good = write_tone(tmp_path / "in" / "a.wav")
    bad = tmp_path / "in" / "b.wav"
    bad.write_text("not audio")
    out_dir = tmp_path / "codes"
    res = run("encode", "--codec", str(codec_dir), "--out-dir", str(out_dir), str(good), str(bad))
    assert res.exit_code == 1
    assert "b.wav: not a readable audio file" in res.stderr
    assert "Traceback" not in res.output
    assert (out_dir / "a.json").is_file()
    assert res.stdout == f"{good}\t{out_dir / 'a.json'}\n"
    res = run("decode", "--codec", str(codec_dir), "--out-dir", str(tmp_path / "wav"), str(out_dir))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "wav" / "a.wav").is_file()
    assert res.stdout == f"{out_dir / 'a.json'}\t{tmp_path / 'wav' / 'a.wav'}\n"


def test_stdin_list_and_usage_errors(tmp_path: Path, codec_dir: Path) -> None:
    a = write_tone(tmp_path / "a.wav")
    res = run("encode", "--codec", str(codec_dir), "--json", "-", input=f"{a}\n")
    assert res.exit_code == 0 and json.loads(res.stdout)["path"] == str(a)
    good = json.loads(res.stdout)
    res = run("decode", "--codec", str(codec_dir), str(tmp_path / "x.json"))
    assert res.exit_code == 2 and "pass -o" in res.stderr
    res = run("encode", "--codec", str(tmp_path / "nope"), str(a))
    assert res.exit_code == 1 and "no such codec checkpoint" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**good, "codes": [[1], [2]]}))
    res = run("decode", "--codec", str(codec_dir), str(bad), "-o", str(tmp_path / "o.wav"))
    assert res.exit_code == 1 and "2 code layers" in res.stderr


def test_train_codec_usage_errors_come_before_any_work(tmp_path: Path) -> None:
    cases = [
        (["--out", str(tmp_path / "r")], "nothing to train on"),
        (["--out", str(tmp_path / "r"), "--latents", str(tmp_path)], "not a latent pack"),
        (["--out", str(tmp_path / "r"), "--data", str(tmp_path), "--disc-periods", "1,x"], "not a list of periods"),
        (["--out", str(tmp_path / "r"), "--data", str(tmp_path), "--residual-search", "l2"], "is not one of"),
        (["--out", str(tmp_path / "r"), "--data", str(tmp_path), "--noise-snr", "40", "10"], "not a range in dB"),
        (["--out", str(tmp_path / "r"), "--data", str(tmp_path), "--noise-floor", "1.5"], "--noise-floor"),
    ]
    for args, message in cases:
        result = run("train-codec", *args)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_train_codec_switches_reach_the_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, str]] = []
    encoder_layers: list[int] = []

    def fake_train(folders: list[Path], out: Path, cfg: Any, codec_cfg: Any, **kwargs: Any) -> Path:
        seen.append((cfg.bf16, codec_cfg.residual_search))
        encoder_layers.append(codec_cfg.small_encoder_layers)
        return Path(out) / "codec"

    monkeypatch.setattr("uniaudio_cli.train.trainer.train_codec", fake_train)
    cases = (
        ([], (None, "cosine")),
        (["--bf16"], (True, "cosine")),
        (["--no-bf16"], (False, "cosine")),
        (["--residual-search", "euclidean"], (None, "euclidean")),
    )
    for flag, want in cases:
        result = run("train-codec", "--out", str(tmp_path / "r"), "--data", str(tmp_path), *flag)
        assert result.exit_code == 0, result.output
        assert seen[-1] == want
    result = run("train-codec", "--out", str(tmp_path / "r"), "--data", str(tmp_path), "--encoder-layers", "6")
    assert result.exit_code == 0 and encoder_layers == [4, 4, 4, 4, 6]


def test_train_codec_noise_floor_reaches_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def fake_train(folders: list[Path], out: Path, cfg: Any, codec_cfg: Any, **kwargs: Any) -> Path:
        seen.append(cfg)
        return Path(out) / "codec"

    monkeypatch.setattr("uniaudio_cli.train.trainer.train_codec", fake_train)
    base = ["train-codec", "--out", str(tmp_path / "r"), "--data", str(tmp_path)]
    assert run(*base).exit_code == 0
    assert (seen[-1].noise_floor, seen[-1].noise_snr_db) == (0.0, (10.0, 40.0))
    assert run(*base, "--noise-floor", "0.5", "--noise-snr", "15", "30").exit_code == 0
    assert (seen[-1].noise_floor, seen[-1].noise_snr_db) == (0.5, (15.0, 30.0))
    # The augmentation probabilities: off by default, passed through, refused outside 0..1.
    for flag, good, bad in (
        ("--speed-perturb", 0.5, "2"),
        ("--band-limit", 0.25, "1.5"),
        ("--channel-eq", 0.5, "-1"),
        ("--reverb", 0.5, "3"),
    ):
        field = flag[2:].replace("-", "_")
        assert getattr(seen[-1], field) == 0.0
        assert run(*base, flag, str(good)).exit_code == 0
        assert getattr(seen[-1], field) == good
        assert run(*base, flag, bad).exit_code != 0
    assert seen[-1].disc_lr_scale == 1.0
    assert run(*base, "--disc-lr-scale", "10").exit_code == 0
    assert seen[-1].disc_lr_scale == 10.0
    assert run(*base, "--disc-lr-scale", "0").exit_code != 0
