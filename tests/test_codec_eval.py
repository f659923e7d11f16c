"""Codec evaluation (metrics, statistics, report rendering, ``uniaudio eval codec``) on a tiny
random codec: fast, no LLM or checkpoint needed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from uniaudio_cli.bridge import TokenBridge
from uniaudio_cli.codec.api import Codec
from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.evaluate.codec_eval import (
    code_entropy,
    evaluate_codec,
    mean_interval,
    mel_distance,
    pesq_wb,
    spread,
    stoi_score,
)
from uniaudio_cli.evaluate.report import Column, Report, Table, json_safe, to_json, to_markdown

SR = 16000
SIZES = [40, 60, 60]


@pytest.fixture(scope="module")
def tiny_codec() -> Codec:
    torch.manual_seed(0)
    cfg = CodecConfig(
        backbone="small",
        latent_dim=16,
        small_dim=32,
        small_intermediate=64,
        small_encoder_layers=1,
        small_decoder_layers=1,
        codebook_sizes=SIZES,
        codebook_dims=[8, 8, 8],
    )
    model = LLMCodec(cfg).eval()
    model.set_codebooks([torch.randn(k, 8) for k in SIZES])
    bridge = TokenBridge(layer_token_ids=[None, None, None], codebook_sizes=SIZES)
    return Codec(model, bridge, torch.device("cpu"), "test")


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    """Amplitude-modulated harmonics plus a little noise: enough structure for STOI/PESQ to run."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t)) ** 2
    return (0.1 * envelope * voiced + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture
def clip_dir(tmp_path: Path) -> Path:
    d = tmp_path / "clips"
    d.mkdir()
    sf.write(d / "a.wav", _speechlike(1.3, 0), SR)
    sf.write(d / "b.flac", _speechlike(0.9, 1), SR)
    return d


# --------------------------------------------------------------------------- metric helpers


def test_stoi_of_clip_against_itself_is_one() -> None:
    x = _speechlike(2.0, 3)
    assert stoi_score(x, x, SR) == pytest.approx(1.0, abs=1e-6)
    noisy = x + 0.2 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    assert stoi_score(x, noisy, SR) < 0.99


def test_pesq() -> None:
    x = _speechlike(1.3, 0)
    assert pesq_wb(x, x) > 4.5
    noisy = x + 0.05 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    assert pesq_wb(x, noisy) < 2.0
    assert pesq_wb(x, np.zeros_like(x)) is None  # undefined, not an error


def test_stoi_too_short_is_none() -> None:
    x = _speechlike(0.1, 4)  # under the 30 frames STOI needs
    assert stoi_score(x, x, SR) is None


def test_mel_distance() -> None:
    x = _speechlike(1.0, 5)
    assert mel_distance(x, x, SR) == 0.0
    assert mel_distance(x, 0.5 * x, SR) > 0.1


def test_code_entropy() -> None:
    assert code_entropy(np.array([5, 5, 5, 5, 0])) == pytest.approx(2.0)
    assert code_entropy(np.array([0, 7, 0])) == 0.0
    assert code_entropy(np.zeros(3, dtype=np.int64)) == 0.0


def test_mean_interval() -> None:
    s = mean_interval([1.0, 2.0, 3.0])
    assert s.mean == pytest.approx(2.0) and s.n == 3
    # t(0.975, 2) = 4.303, sd = 1: half-width 4.303 / sqrt(3)
    assert s.high - s.mean == pytest.approx(4.3027 / math.sqrt(3), rel=1e-3)
    one = mean_interval([0.5, None])  # type: ignore[list-item]
    assert (one.mean, one.interval, one.n) == (0.5, None, 1)
    assert mean_interval([]).mean is None
    two = mean_interval([1.0, 3.0])  # two values: an interval (t with one degree of freedom)
    assert two.low is not None and two.high - two.mean == pytest.approx(12.706, rel=1e-3)


# --------------------------------------------------------------------------- evaluate_codec


def test_evaluate_codec(tiny_codec: Codec, clip_dir: Path) -> None:
    bad = clip_dir / "empty.wav"
    bad.write_bytes(b"")
    files = sorted(clip_dir.iterdir())
    result = evaluate_codec(tiny_codec, files, progress=False)

    assert len(result.clips) == 2
    assert [Path(p).name for p, _ in result.failed] == ["empty.wav"]
    d = result.to_dict()
    assert {
        "codec",
        "files",
        "evaluated",
        "seconds",
        "metrics",
        "total_rtf",
        "layers",
        "clips",
        "failed",
        "pesq_skipped",
        "stoi_skipped",
    } <= set(d)
    assert set(d["metrics"]) == {"pesq", "stoi", "mel_distance", "tokens_per_second", "encode_rtf", "decode_rtf"}
    assert (d["files"], d["evaluated"]) == (3, 2)
    for clip in result.clips:
        assert clip.pesq is None or -0.5 <= clip.pesq <= 4.7
        assert clip.stoi is None or -1.0 <= clip.stoi <= 1.0
        assert clip.mel_distance >= 0 and clip.encode_s > 0 and clip.decode_s > 0
        # 480-sample frames padded to whole layer-1 strides: 33.3 + 16.7 + 8.3 codes/s, a bit more when padded
        assert clip.tokens_per_second >= tiny_codec.tokens_per_second - 1e-6
    assert [layer.codebook_size for layer in result.layers] == SIZES
    for layer in result.layers:
        assert 0.0 < layer.usage <= 1.0
        assert layer.distinct <= min(layer.codes, layer.codebook_size)
        assert 0.0 <= layer.entropy_bits <= layer.max_entropy_bits
    # layer i has stride-proportional code counts
    assert result.layers[0].codes * 4 == result.layers[2].codes
    json.loads(to_json(result.to_report(metadata={"commit": "abc"})))  # strict JSON, no NaN


def test_evaluate_codec_max_files(tiny_codec: Codec, clip_dir: Path) -> None:
    result = evaluate_codec(tiny_codec, sorted(clip_dir.iterdir()), max_files=1, progress=False)
    assert len(result.clips) == 1
    s = result.summary()["mel_distance"]
    assert s.n == 1 and s.interval is None


def test_max_files_spreads_over_a_sorted_folder_instead_of_taking_its_first_labels() -> None:
    # An FSDD-like folder: 10 digits x 50 takes, sorted by digit first.
    files = [Path(f"{d}_nicolas_{k:02d}.flac") for d in range(10) for k in range(50)]
    chosen = spread(files, 100)
    assert len(chosen) == 100 and len(set(chosen)) == 100
    assert chosen == sorted(chosen, key=files.index)  # the list's order is kept
    assert {p.name[0] for p in chosen} == {str(d) for d in range(10)}
    assert sum(p.name.startswith("3_") for p in chosen) == 10
    assert spread(files, 500) == files and spread(files, None) == files and spread(files, 0) == files
    assert spread(files[:3], 2) == [files[0], files[1]]
    assert spread(files[:10], 4) == [files[i] for i in (0, 2, 5, 7)]  # evenly, not bunched at the start


def test_codec_report_markdown(tiny_codec: Codec, clip_dir: Path) -> None:
    result = evaluate_codec(tiny_codec, sorted(clip_dir.iterdir()), progress=False)
    md = to_markdown(result.to_report(metadata={"commit": "abc123", "machine": "test", "date": "2025-01-01"}))
    lines = md.splitlines()
    assert lines[0] == "## Codec evaluation: test"
    assert "commit: abc123 · machine: test · date: 2025-01-01" in md
    assert "| Metric |  | Mean | 95 % CI | Clips |" in lines
    assert "| Layer | Stride | Codebook | Codes | Distinct | Usage | Entropy (bits) | Max (bits) |" in lines
    assert any(line.startswith("| STOI | ↑ |") for line in lines)
    assert sum(line.startswith("| 1 | 4 | 40 |") for line in lines) == 1


# --------------------------------------------------------------------------- report layer


def test_report_layer_generic() -> None:
    table = Table(
        "Accuracy",
        [Column("task", "Task"), Column("acc", "Accuracy", ".1%"), Column("ci", "95 % CI", ".1%")],
        [
            {"task": "digits | fsdd", "acc": 0.5, "ci": (0.4, 0.6)},
            {"task": "esc10", "acc": None, "ci": None},
            {"task": "custom", "acc": 0.123456, "ci": None, "_fmt": {"acc": ".3f"}},
        ],
        notes=["n = 10"],
    )
    report = Report("Few-shot", [table], {"commit": None, "date": "d"})
    md = to_markdown(report)
    assert "| Task | Accuracy | 95 % CI |" in md
    assert "|:---|---:|---:|" in md
    assert r"| digits \| fsdd | 50.0% | [40.0%, 60.0%] |" in md
    assert "| esc10 | – | – |" in md
    assert "| custom | 0.123 | – |" in md
    assert "commit" not in md  # None metadata is left out
    d = json.loads(to_json(report))
    assert d["tables"][0]["rows"][0] == {"task": "digits | fsdd", "acc": 0.5, "ci": [0.4, 0.6]}
    assert "_fmt" not in d["tables"][0]["rows"][2]
    assert json_safe({"x": float("nan"), "y": np.float32(1.5), "p": Path("a")}) == {"x": None, "y": 1.5, "p": "a"}


def test_render_rich(tiny_codec: Codec, clip_dir: Path) -> None:
    from rich.console import Console

    from uniaudio_cli.evaluate.report import render_rich

    result = evaluate_codec(tiny_codec, sorted(clip_dir.iterdir()), progress=False)
    console = Console(record=True, width=120)
    render_rich(result.to_report(metadata={"commit": "abc"}), console)
    text = console.export_text()
    assert "Codebook usage per layer" in text and "Mel distance" in text


# --------------------------------------------------------------------------- CLI


def test_cli_eval_codec(tiny_codec: Codec, clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uniaudio_cli.codec.api as api
    from uniaudio_cli.cli import app

    monkeypatch.setattr(api, "load_codec", lambda *a, **k: tiny_codec)
    md = tmp_path / "out.md"
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "codec", str(clip_dir), "--json", "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["evaluated"] == 2 and d["metadata"]["device"] == "cpu"
    assert md.read_text().startswith("## Codec evaluation: test")

    # an existing Markdown file needs --force; a bad file is reported and skipped (exit 1)
    res = runner.invoke(app, ["eval", "codec", str(clip_dir), "--markdown", str(md)])
    assert res.exit_code == 2 and "exists" in res.stderr
    (clip_dir / "bad.wav").write_bytes(b"not audio")
    res = runner.invoke(app, ["eval", "codec", str(clip_dir), "--markdown", str(md), "--force", "--max-files", "5"])
    assert res.exit_code == 1
    assert "bad.wav: not a readable audio file" in res.stderr
    assert "Reconstruction and speed" in res.stdout
