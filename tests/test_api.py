"""The Python API: the README's example runs as written (tiny models patched in), and the task
objects are built from encoded demonstrations without reading files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import uniaudio_cli as ua
from tests.conftest import python_block, write_tone
from tests.test_tasks import tiny_models, write_label_demos, write_pairs

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    return ua.Models(*tiny_models(tmp_path_factory.mktemp("tiny_models")))


def readme_api_example() -> str:
    text = README.read_text()
    return python_block(text[text.index("## Python API") :])


def test_readme_example_runs(models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    write_label_demos(tmp_path / "demos")
    for name, freq in (("query1.wav", 300.0), ("query2.flac", 1500.0), ("query3.wav", 320.0)):
        write_tone(tmp_path / name, 1.0, freq=freq)
    write_tone(tmp_path / "dog1.wav", 1.0, freq=300.0)
    write_tone(tmp_path / "rain1.wav", 1.0, freq=1500.0)
    write_tone(tmp_path / "noisy.wav", 0.8, freq=500.0)
    write_tone(tmp_path / "clip.wav", 0.7, freq=700.0)
    digits = write_label_demos(tmp_path / "digits", {"1": 250.0, "2": 700.0}, seconds=0.96)
    pairs = write_pairs(tmp_path / "pairs")
    monkeypatch.setattr("uniaudio_cli.api.load_models", lambda *a, **k: models)
    # The example uses the shipped demonstrations; the tiny LLM's context needs smaller ones.
    monkeypatch.setattr("uniaudio_cli.tasks.options.default_tts_demos", lambda: digits)
    monkeypatch.setattr("uniaudio_cli.tasks.options.default_denoise_demos", lambda: pairs)
    exec(compile(readme_api_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("query1.wav ") and out[0].split()[1] in ("dog", "rain")
    assert len(out) == 5  # two predictions, probabilities, the answer, the layer-1 text


def test_every_demonstration_clip_is_used_unless_shots_limits(models, tmp_path: Path) -> None:
    demos = write_label_demos(tmp_path / "demos", clips=3)
    assert all(len(v) == 3 for v in ua.classifier(models, demos)._demo_tokens.values())
    assert all(len(v) == 1 for v in ua.classifier(models, demos, shots=1)._demo_tokens.values())


def test_task_objects_take_encoded_demonstrations(models) -> None:
    from uniaudio_cli.tasks.classify import Classifier, ClassifyOptions, audio_tokens

    llm, codec = models
    rng = np.random.default_rng(0)
    noise = [(0.1 * rng.standard_normal(16000)).astype(np.float32) for _ in range(3)]
    tokens = {label: [audio_tokens(codec, wav, "semantic")] for label, wav in zip("ab", noise, strict=False)}
    clf = Classifier(llm, codec, tokens, ClassifyOptions(method="prototype"))
    pred = clf.classify_audio(noise[2], "in memory")
    assert pred.path == "in memory" and pred.label in ("a", "b")
    assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_classifier_warns_about_too_short_and_too_long_queries(models) -> None:
    from uniaudio_cli.tasks.classify import Classifier, ClassifyOptions, audio_tokens

    llm, codec = models
    rng = np.random.default_rng(1)

    def noise(seconds: float) -> np.ndarray:
        return (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)

    tokens = {label: [audio_tokens(codec, noise(1.0), "semantic")] for label in ("a", "b")}
    clf = Classifier(llm, codec, tokens, ClassifyOptions(method="prototype"))
    assert clf.classify_audio(noise(1.0)).warnings == []
    assert "too short to judge" in clf.classify_audio(noise(0.05)).warnings[0]
    assert "demonstrations at most" in clf.classify_audio(noise(12.0)).warnings[0]
