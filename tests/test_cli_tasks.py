"""`uniaudio classify / tts / denoise` end to end, with the tiny LLaMA + codec patched in for
the real models (see tests/test_tasks.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from tests.conftest import write_tone
from tests.test_tasks import write_label_demos, write_pairs
from uniaudio_cli.cli import app


@pytest.fixture(autouse=True)
def _patched_models(models, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("uniaudio_cli.cli.load_models", lambda *args, **kwargs: models)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_label_demos(root / "labels")
    write_label_demos(root / "digits", {"1": 250.0, "2": 700.0}, seconds=0.96)
    write_pairs(root / "pairs")
    write_tone(root / "q" / "a.wav", 1.3, freq=320.0)
    write_tone(root / "q" / "c.wav", 0.7, freq=1400.0)
    (root / "q" / "b.wav").write_text("not audio")
    return root


def run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_classify_prints_path_label_probability(data: Path) -> None:
    a, c = data / "q" / "a.wav", data / "q" / "c.wav"
    res = run("classify", "--demos", data / "labels", a, c)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 2
    for line, q in zip(lines, (a, c), strict=True):
        path, label, prob = line.split("\t")
        assert path == str(q) and label in ("dog", "rain") and 0.5 <= float(prob) <= 1.0
        assert len(prob.split(".")[1]) == 4
    res = run("classify", "--demos", data / "labels", "--json", "--method", "prototype", a, c)
    assert res.exit_code == 0, res.output
    for line, q in zip(res.stdout.splitlines(), (a, c), strict=True):
        obj = json.loads(line)
        assert obj["path"] == str(q) and set(obj["probabilities"]) == {"dog", "rain"}
        assert obj["probability"] == obj["probabilities"][obj["label"]]
        assert sum(obj["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_classify_goes_on_past_a_bad_query(data: Path) -> None:
    res = run("classify", "--demos", data / "labels", data / "q" / "a.wav", data / "q" / "b.wav", data / "q" / "c.wav")
    assert res.exit_code == 1
    assert "b.wav: not a readable audio file" in res.stderr
    assert "Traceback" not in res.output
    assert [line.split("\t")[0] for line in res.stdout.splitlines()] == [
        str(data / "q" / "a.wav"),
        str(data / "q" / "c.wav"),
    ]


def test_a_batch_summary_counts_the_failures(data: Path) -> None:
    res = run("classify", "--demos", data / "labels", data / "q" / "a.wav", data / "q" / "b.wav")
    assert res.exit_code == 1 and "1 of 2 inputs failed" in res.stderr
    res = run("classify", "--demos", data / "labels", data / "q" / "a.wav", data / "q" / "b.wav", "--quiet")
    assert "inputs failed" not in res.stderr


def test_classify_demo_folder_errors(data: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = run("classify", "--demos", tmp_path / "empty", data / "q" / "a.wav")
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert f"{tmp_path / 'empty'}: 0 label folder(s)" in res.stderr
    assert "Traceback" not in res.output and res.stdout == ""
    res = run("classify", "--demos", data / "labels", "--shots", "3", data / "q" / "a.wav")
    assert res.exit_code == 2 and str(data / "labels" / "dog") in res.stderr


def test_classify_says_paper_mode_is_for_icl(data: Path) -> None:
    q = data / "q" / "a.wav"
    res = run("classify", "--demos", data / "labels", "--mode", "paper", q)
    assert res.exit_code == 0, res.output
    assert "note: --mode paper is the paper's in-context prompt, read by --method icl" in res.stderr
    res = run("classify", "--demos", data / "labels", "--mode", "paper", "--method", "icl", q)
    assert res.exit_code == 0, res.output
    assert "--mode paper is" not in res.stderr


def test_tts_output_and_force(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "two.wav"
    res = run("tts", "1+1", "-o", out, "--demos", data / "digits")
    assert res.exit_code == 0, res.output
    info = sf.info(out)
    assert info.samplerate == 16000 and info.channels == 1 and info.frames == int(0.96 * 16000)
    text, dest, answer, prob, follows = res.stdout.strip().split("\t")
    assert (text, dest) == ("1+1", str(out))
    assert answer in ("answer=1", "answer=2") and follows.startswith(f"follows={data / 'digits'}")
    assert prob.startswith("p=") and 0.0 <= float(prob[2:]) <= 1.0
    res = run("tts", "1+1", "-o", out, "--demos", data / "digits")
    assert res.exit_code == 2 and "exists" in res.stderr and "--force" in res.stderr
    res = run("tts", "1+1", "-o", out, "--demos", data / "digits", "--force", "--mode", "paper")
    assert res.exit_code == 0, res.output
    assert sf.info(out).frames == int(0.96 * 16000)


def test_tts_out_dir_writes_one_file_per_text(data: Path, tmp_path: Path) -> None:
    res = run("tts", "1+1", "2", "--out-dir", tmp_path / "out", "--demos", data / "digits")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["1+1.wav", "2.wav"]
    assert len(res.stdout.splitlines()) == 2
    res = run("tts", "1+1", "2", "-o", tmp_path / "x.wav", "--demos", data / "digits")
    assert res.exit_code == 2 and "-o takes one input" in res.stderr


def test_tts_says_when_a_text_has_fewer_clips_than_shots(data: Path, tmp_path: Path) -> None:
    res = run("tts", "1+1", "-o", tmp_path / "a.wav", "--demos", data / "digits")  # 2 clips each, --shots 5
    assert res.exit_code == 0, res.output
    assert "note: --shots 5: fewer clips in '1' 2, '2' 2; each text uses the clips it has" in res.stderr
    res = run("tts", "1+1", "-o", tmp_path / "b.wav", "--demos", data / "digits", "--shots", "2")
    assert res.exit_code == 0, res.output
    assert "fewer clips" not in res.stderr
    res = run("tts", "1+1", "-o", tmp_path / "c.wav", "--demos", data / "digits", "--quiet")
    assert res.exit_code == 0, res.output
    assert "fewer clips" not in res.stderr


def test_denoise_keeps_duration(data: Path, tmp_path: Path) -> None:
    noisy = data / "q" / "c.wav"
    out = tmp_path / "clean.wav"
    res = run("denoise", noisy, "-o", out, "--demos", data / "pairs", "--pairs", "2")
    assert res.exit_code == 0, res.output
    info = sf.info(out)
    assert info.samplerate == 16000 and info.frames == sf.info(noisy).frames
    assert res.stdout.strip() == f"{noisy}\t{out}"


@pytest.mark.parametrize("command", ["classify", "tts", "denoise"])
def test_bogus_mode_is_a_usage_error(data: Path, tmp_path: Path, command: str) -> None:
    args = {
        "classify": ["--demos", data / "labels", data / "q" / "a.wav"],
        "tts": ["1+1", "-o", tmp_path / "o.wav"],
        "denoise": [data / "q" / "a.wav", "-o", tmp_path / "o.wav"],
    }[command]
    res = run(command, *args, "--mode", "bogus")
    assert res.exit_code == 2
    assert "--mode 'bogus' is not one of default, paper" in res.stderr
    assert "Traceback" not in res.output
