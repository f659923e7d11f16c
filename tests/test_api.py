"""The Python API: the README's example runs as written (tiny models patched in), and the task
objects are built from encoded demonstrations without reading files."""

from __future__ import annotations

import re
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
    # The bounds: two tokens are enough to judge; "long" needs both 4x the longest demonstration
    # and 5 s (demonstrations of 6 s: a 7 s query is not long).
    t1 = tokens["a"][0]
    assert clf.query_warnings(t1[:2]) == [] and "too short" in clf.query_warnings(t1[:1])[0]
    long_demos = Classifier(
        llm,
        codec,
        {lb: [audio_tokens(codec, noise(6.0), "semantic")] for lb in "ab"},
        ClassifyOptions(method="prototype"),
    )
    assert long_demos.query_warnings(audio_tokens(codec, noise(7.0), "semantic")) == []


def test_one_text_or_path_alone_is_one_item(models, tmp_path: Path) -> None:
    digits = write_label_demos(tmp_path / "digits", {"1": 250.0, "2": 700.0}, seconds=0.96)
    assert len(ua.speak(models, "1+1", digits)) == 1
    demos = write_label_demos(tmp_path / "demos")
    query = write_tone(tmp_path / "q.wav", 1.0, freq=300.0)
    assert [p.path for p in ua.classify(models, demos, str(query))] == [str(query)]
    from uniaudio_cli.errors import UsageError

    with pytest.raises(UsageError, match="texts: int given"):
        ua.speak(models, 3, digits)  # type: ignore[arg-type]


def test_api_arguments_are_checked_with_typed_errors(models, tmp_path: Path) -> None:
    from uniaudio_cli.errors import AudioError, UsageError

    demos = write_label_demos(tmp_path / "demos")
    with pytest.raises(UsageError, match=r"unknown option 'methd' for ClassifyOptions.*method"):
        ua.classifier(models, demos, methd="icl")
    bad_options = [
        ({"method": "ICL"}, "method='ICL' is not one of fused, prototype, icl"),
        ({"mode": "bogus"}, "mode='bogus' is not one of default, paper"),
        ({"layers": "bogus"}, "layers='bogus'"),
        ({"temperature": 0}, "temperature=0 is not a number above 0"),
        ({"channel_temperature": 0.0}, "channel_temperature=0.0"),
        ({"depth": 1.5}, "depth=1.5 is not a number at least 0 and at most 1"),
        ({"repeats": 0}, "repeats=0 is not an integer at least 1"),
        ({"shots": "1"}, "shots='1' is not an integer"),
    ]
    from uniaudio_cli.tasks.options import ClassifyOptions, DenoiseOptions, TTSOptions

    for kwargs, needle in bad_options:
        with pytest.raises(UsageError, match=re.escape(needle)):
            ClassifyOptions(**kwargs)
    for cls, kwargs, needle in (
        (TTSOptions, {"mode": "bogus"}, "mode='bogus'"),
        (TTSOptions, {"shots": -1}, "shots=-1"),
        (TTSOptions, {"top_k": -5}, "top_k=-5"),
        (TTSOptions, {"seed": 2**64}, "seed=18446744073709551616"),
        (DenoiseOptions, {"pairs": 0}, "pairs=0"),
        (DenoiseOptions, {"mask": {}}, "is not a MaskSettings"),
    ):
        with pytest.raises(UsageError, match=re.escape(needle)):
            cls(**kwargs)
    with pytest.raises(UsageError, match="decode takes an EncodedClip, not list"):
        ua.decode(models, [[1, 2]])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="encode takes one path, not list"):
        ua.encode(models, ["a.wav"])  # type: ignore[arg-type]
    # In-memory audio: refused where it would be misread, converted where it is only a layout.
    codec = models.codec
    tone = (0.3 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    assert codec.encode(tone[:, None]) == codec.encode(tone) == codec.encode(tone.astype(np.float64))
    for wav, err, needle in (
        (np.stack([tone, tone], axis=1), UsageError, "shape (16000, 2), expected mono"),
        ((tone * 32767).astype(np.int16), UsageError, "int16 samples"),
        (np.zeros(0, dtype=np.float32), AudioError, "no samples"),
        (np.full(100, np.nan, dtype=np.float32), AudioError, "NaN or infinite"),
        ("tone.wav", UsageError, "str is not audio"),
    ):
        with pytest.raises(err, match=re.escape(needle)):
            codec.encode(wav)


def test_loading_models_leaves_the_callers_random_stream(models, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from uniaudio_cli import api

    def draws(*_a: object, **_k: object):
        torch.rand(3)  # stands for the random initial weights a model is built with
        return models.llm

    monkeypatch.setattr("uniaudio_cli.llm.load_llm", draws)
    monkeypatch.setattr("uniaudio_cli.codec.api.load_codec", lambda *a, **k: models.codec)
    torch.manual_seed(0)
    api.load_models()
    after_load = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after_load)
    assert "classify" in dir(ua) and "load_models" in dir(ua)


def test_classify_options_resolve_again_after_replace() -> None:
    """The method's defaults (crop, temperature, layers) are read through properties, so that
    options derived with dataclasses.replace get the new method's, not the old one's."""
    from dataclasses import replace

    from uniaudio_cli.tasks.options import FITTED_TEMPERATURE, ClassifyOptions

    fused = ClassifyOptions()
    assert (fused.token_layers, fused.crop_seconds) == ("all", None)
    paper = replace(fused, method="icl", mode="paper")
    assert paper.crop_seconds == 1.0 and paper.token_layers == "semantic"
    assert paper.crop_seconds == ClassifyOptions(method="icl", mode="paper").crop_seconds
    proto = replace(fused, method="prototype")
    assert proto.softmax_temperature == pytest.approx(FITTED_TEMPERATURE["prototype"])
    assert proto.softmax_temperature != pytest.approx(fused.softmax_temperature)
    assert proto.token_layers == "semantic"
    assert replace(proto, temperature=0.3).softmax_temperature == 0.3
    assert ClassifyOptions(method="icl", mode="paper", crop=0).crop_seconds is None
    assert ClassifyOptions(crop=2).crop_seconds == 2.0


def test_denoise_pairs_default_per_mode() -> None:
    """Paper mode puts every pair in one prompt, so it takes 4 by default (all would overflow
    SmolLM2's context with the shipped demonstrations); the default mode reads them one by one."""
    from uniaudio_cli.tasks.options import DenoiseOptions

    assert DenoiseOptions(mode="paper").pair_count(10) == 4
    assert DenoiseOptions(mode="paper").pair_count(3) == 3
    assert DenoiseOptions().pair_count(10) == 10
    assert DenoiseOptions(mode="paper", pairs=6).pair_count(10) == 6


def test_a_codec_for_another_llm_is_refused_before_the_llm_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The codec checks the LLM's vocabulary (tokenizer and embedding table, read without the
    model) before the LLM's weights load, which for LLaMA 2 7B takes minutes."""
    import transformers

    from tests.test_decoding import tiny_llama
    from tests.test_prompts import build_tokenizer
    from uniaudio_cli.errors import VocabularyMismatchError

    folder = tmp_path / "tiny-llama"
    tiny_llama().save_pretrained(folder)
    build_tokenizer(size=tiny_llama().config.vocab_size).save_pretrained(folder)
    loads: list[str] = []

    def from_pretrained(*args: object, **kwargs: object) -> None:
        loads.append(str(args[0]))
        raise AssertionError("the LLM's weights were loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    with pytest.raises(VocabularyMismatchError, match="codec built for SmolLM2-135M-Instruct"):
        ua.load_models(llm=str(folder), device="cpu")
    assert loads == []
