"""Text-to-sound (`uniaudio generate`, `uniaudio eval generate`) on the tiny LLaMA + codec of
tests/test_tasks.py: outputs decode at the requested length, follow the codec's layer structure
and are seeded; prompts that do not fit are refused; the CLI checks its arguments before any
model loads; the evaluation runs end to end with its reference rows."""

from __future__ import annotations

import dataclasses
import json
import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

import uniaudio_cli as ua
from tests.test_tasks import SPECIAL, write_label_demos
from uniaudio_cli.cli import app
from uniaudio_cli.errors import PromptTooLongError, UsageError
from uniaudio_cli.evaluate.generate_eval import COPY, GENERATED, HELDOUT, RANDOM, split_clips
from uniaudio_cli.prompts import available_templates
from uniaudio_cli.tasks.audio_gen import flatten
from uniaudio_cli.tasks.generate import GenerateOptions, SoundDemo, SoundGenerator, caption_of, code_counts

SR = 16000


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``dog_bark`` and ``rain``, two 0.96 s tones each (0.96 s is a whole number of codec units)."""
    return write_label_demos(tmp_path_factory.mktemp("captions"), {"dog_bark": 300.0, "rain": 1500.0}, seconds=0.96)


def _assert_valid_layers(codec, tokens: list[list[int]], counts: list[int]) -> None:
    assert [len(layer) for layer in tokens] == counts
    for layer, ids in enumerate(tokens):
        assert set(ids) <= set(codec.bridge.valid_token_ids(layer))
    assert not SPECIAL & set(flatten(tokens))
    codec.bridge.from_token_ids(tokens)  # raises on an id that is not a code of its layer


# -- library ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["default", "paper"])
def test_output_decodes_at_the_requested_length(models, demos: Path, mode: str) -> None:
    llm, codec = models
    gen = SoundGenerator.from_files(llm, codec, demos, GenerateOptions(mode=mode, seconds=0.5, crop=0.96, shots=2))
    assert gen.captions == ["dog bark", "rain"] and len(gen.demos) == 4
    assert gen.counts == code_counts(codec, 8000) == [5, 10, 20]  # 0.5 s pads to 5 units of 1920 samples
    sound = gen.generate("dog bark")
    assert sound.sample_rate == SR and sound.audio.shape == (8000,) and sound.audio.dtype == np.float32
    assert np.isfinite(sound.audio).all()
    _assert_valid_layers(codec, sound.tokens, gen.counts)
    if mode == "default":  # only codes the dog-bark demonstrations use in that layer
        assert sound.steered_by == "dog bark" and sound.match_probability == 1.0
        for layer, ids in enumerate(sound.tokens):
            assert set(ids) <= {t for d in gen.demos if d.caption == "dog bark" for t in d.tokens[layer]}
    else:
        assert sound.steered_by is None
    # follows/copied: the demonstration holding most of the clip's within-layer token pairs.
    pairs = [list(pairwise(layer)) for layer in sound.tokens]

    def share(d: SoundDemo) -> float:
        own = [set(pairwise(layer)) for layer in d.tokens]
        return sum(p in own[i] for i, ps in enumerate(pairs) for p in ps) / sum(len(ps) for ps in pairs)

    assert sound.follows in gen.demos and sound.copied == pytest.approx(max(share(d) for d in gen.demos))
    assert sound.copied == pytest.approx(share(sound.follows)) and 0.0 <= sound.copied <= 1.0
    with pytest.raises(UsageError, match="empty caption"):
        gen.generate("  ")


def test_default_mode_matches_the_caption_and_recalls_its_demonstrations(models, demos: Path, monkeypatch) -> None:
    llm, codec = models
    gen = SoundGenerator.from_files(llm, codec, demos, GenerateOptions(crop=0.96, shots=2, temperature=0.0))
    assert gen.match_caption("Dog_Bark") == ("dog bark", 1.0)
    # A caption no folder names goes to the caption the LLM finds likeliest as a rewording of
    # it, calibrated by each caption's prior (its score after an empty description).
    calibrated = gen._caption_scores("a dog barking") - gen._caption_scores("")
    probs = torch.softmax(calibrated, dim=0)
    caption, p = gen.match_caption("a dog barking")
    assert caption == gen.captions[int(probs.argmax())] and p == pytest.approx(float(probs.max()))
    assert 1 / len(gen.captions) <= p < 1.0
    # The matched caption's demonstrations are recalled just before the query.
    seen: list[list[int]] = []
    real = ua.tasks.generate.generate_constrained

    def spy(prefix, query_ids, schedule, **kw):
        seen.append(list(query_ids))
        return real(prefix, query_ids, schedule, **kw)

    monkeypatch.setattr("uniaudio_cli.tasks.generate.generate_constrained", spy)
    sound = gen.generate("rain")
    b, t = gen.builder, gen.builder.template
    rain = [d for d in gen.demos if d.caption == "rain"]
    recalled = [
        i for d in rain for i in b.render(t.demo, audio={"audio": flatten(d.tokens)}, text="rain") + b.text(t.block)
    ]
    assert seen[-1] == recalled + b.render(t.query, text="rain") and sound.steered_by == "rain"
    no_recall = SoundGenerator.from_files(llm, codec, demos, GenerateOptions(crop=0.96, shots=2, recall=False))
    no_recall.generate("rain")
    assert seen[-1] == b.render(t.query, text="rain")


def test_default_length_is_the_demonstrations_commonest(models, demos: Path) -> None:
    llm, codec = models
    whole = SoundGenerator.from_files(llm, codec, demos, GenerateOptions(crop=None, shots=1))
    assert whole.num_samples == int(0.96 * SR) and whole.counts == [8, 16, 32]
    assert whole.generate("rain").audio.shape == (int(0.96 * SR),)
    cropped = SoundGenerator.from_files(llm, codec, demos, GenerateOptions(crop=0.5, shots=1))
    assert cropped.seconds == 0.5 and all(d.num_samples == 8000 for d in cropped.demos)
    # The constructor reads no files: demonstrations of mixed lengths, the commonest wins.
    noise = np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32) * 0.1
    made = [SoundDemo("dog bark", codec.encode(noise[:n]), n) for n in (int(0.96 * SR), int(0.96 * SR), int(0.3 * SR))]
    gen = SoundGenerator(llm, codec, made, GenerateOptions(temperature=0.0))
    assert gen.num_samples == int(0.96 * SR)
    sound = gen.generate("sea waves")
    assert sound.audio.shape == (int(0.96 * SR),) and sound.follows.name == "'dog bark'"
    with pytest.raises(UsageError, match="no text-to-sound demonstrations"):
        SoundGenerator(llm, codec, [], GenerateOptions())


def test_prompt_interleaves_captions_after_the_instruction(models, demos: Path) -> None:
    llm, codec = models
    assert "generate_paper" in available_templates()
    gen = SoundGenerator.from_files(llm, codec, demos, GenerateOptions(crop=0.5, shots=2))
    assert [d.caption for d in gen.ordered_demos()] == ["dog bark", "rain", "dog bark", "rain"]
    b, t = gen.builder, gen.builder.template
    ids = gen.prefix_ids()
    head = b.bos() + b.render(t.induction)
    assert ids[: len(head)] == head and ids[-len(b.text(t.block)) :] == b.text(t.block)
    first = gen.ordered_demos()[0]
    shot = b.text(t.block) + b.render(t.demo, audio={"audio": flatten(first.tokens)}, text="dog bark")
    assert ids[len(head) : len(head) + len(shot)] == shot
    no_ind = SoundGenerator.from_files(llm, codec, demos, GenerateOptions(crop=0.5, shots=2, induction=False))
    assert no_ind.prefix_ids() == b.bos() + ids[len(head) :]


def test_a_caption_and_a_seed_give_one_clip(models, demos: Path) -> None:
    llm, codec = models
    gen = SoundGenerator.from_files(llm, codec, demos, GenerateOptions(seconds=0.5, crop=0.5, temperature=1.0))
    a, b = gen.generate("rain", seed=3), gen.generate("rain", seed=3)
    assert a.tokens == b.tokens and np.array_equal(a.audio, b.audio) and a.seed == 3
    assert gen.generate("rain").tokens == gen.generate("rain", seed=0).tokens  # the options' seed
    assert len({tuple(flatten(gen.generate("rain", seed=s).tokens)) for s in range(4)}) > 1
    greedy = SoundGenerator.from_files(llm, codec, demos, GenerateOptions(seconds=0.5, crop=0.5, temperature=0.0))
    assert greedy.generate("rain", seed=1).tokens == greedy.generate("rain", seed=2).tokens


def test_a_prompt_that_does_not_fit_is_refused_before_generating(models, demos: Path) -> None:
    llm, codec = models
    opts = GenerateOptions(seconds=0.5, crop=0.96, shots=2)
    fits = SoundGenerator.from_files(llm, codec, demos, opts)
    recall = max(len(fits._recall_ids(c)) for c in fits.captions)
    assert recall > 0  # default mode repeats the matched caption's demonstrations before the query
    need = len(fits.prefix_ids()) + recall + len(fits.builder.render(fits.builder.template.query, text="")) + 35
    small = dataclasses.replace(llm, context_length=need - 1)
    # Without the recall the same context is enough; with it, the generator is refused at once,
    # not at the first caption.
    SoundGenerator.from_files(small, codec, demos, dataclasses.replace(opts, recall=False))
    with pytest.raises(PromptTooLongError) as e:
        SoundGenerator.from_files(small, codec, demos, opts)
    assert f"more than the LLM's context of {need - 1}" in e.value.message
    assert "--shots" in e.value.fix and "--crop" in e.value.fix and "--seconds" in e.value.fix
    with pytest.raises(PromptTooLongError, match=r"60 s\)"):
        SoundGenerator.from_files(llm, codec, demos, dataclasses.replace(opts, seconds=60.0))
    # Exactly enough for an empty caption: a real caption no longer fits, refused before the LLM runs.
    tight = SoundGenerator.from_files(dataclasses.replace(llm, context_length=need), codec, demos, opts)
    with pytest.raises(PromptTooLongError):
        tight.generate("a dog barking far away")


def test_options_are_checked() -> None:
    for kwargs, needle in (
        ({"mode": "bogus"}, "mode='bogus' is not one of default, paper"),
        ({"seconds": 0.0}, "seconds=0.0 is not a number above 0"),
        ({"seconds": float("inf")}, "seconds=inf is not a number"),  # would overflow the sample count
        ({"crop": -1.0}, "crop=-1.0 is not a number at least 0"),
        ({"shots": 0}, "shots=0 is not an integer at least 1"),
        ({"shots": 1.5}, "shots=1.5 is not an integer"),
        ({"temperature": -0.5}, "temperature=-0.5"),
        ({"temperature": float("nan")}, "temperature=nan"),  # would reach the sampler
        ({"top_k": -1}, "top_k=-1"),
        ({"seed": 2**64}, "seed=18446744073709551616"),  # beyond what torch seeds take
    ):
        with pytest.raises(UsageError, match=re.escape(needle)):
            GenerateOptions(**kwargs)
    assert GenerateOptions(crop=0.0).crop is None
    assert caption_of("dog_bark") == "dog bark" and caption_of("sea__waves ") == "sea waves"


def test_api_generate(models, demos: Path) -> None:
    assert {"generate", "generator"} <= set(ua.__all__)
    m = ua.Models(*models)
    sounds = ua.generate(m, ["dog bark", "rain"], demos, seconds=0.5, crop=0.5, shots=1)
    assert [s.caption for s in sounds] == ["dog bark", "rain"]
    assert all(s.audio.shape == (8000,) for s in sounds)
    gen = ua.generator(m, {"dog_bark": sorted((demos / "dog_bark").iterdir())}, crop=0.5, shots=1)
    assert gen.captions == ["dog bark"] and len(gen.demos) == 1


# -- CLI -------------------------------------------------------------------------------------


def run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_generate_output_and_force(demos: Path, tmp_path: Path, loads: list[int]) -> None:
    out = tmp_path / "dog.wav"
    res = run("generate", "dog bark", "--demos", demos, "-o", out, "--seconds", "0.5", "--crop", "0.5")
    assert res.exit_code == 0, res.output
    info = sf.info(out)
    assert info.samplerate == SR and info.channels == 1 and info.frames == 8000
    caption, dest, steered, follows, copied = res.stdout.strip().split("\t")
    assert (caption, dest, steered) == ("dog bark", str(out), "from='dog bark'@1.00")
    assert follows.startswith(f"follows={demos}") and 0.0 <= float(copied.removeprefix("copied=")) <= 1.0
    assert "dog_bark: 2/2, rain: 2/2 clips" in res.stderr
    res = run("generate", "dog bark", "--demos", demos, "-o", out)
    assert res.exit_code == 2 and "exists" in res.stderr and "--force" in res.stderr
    res = run("generate", "sea waves", "--demos", demos, "-o", out, "--force", "--crop", "0.5", "--shots", "1")
    assert res.exit_code == 0, res.output
    assert "'sea waves' is no demonstration caption; it will be written from the codes of the nearest" in res.stderr
    assert res.stdout.split("\t")[2].startswith("from='")
    assert sf.info(out).frames == 8000
    assert loads == [1, 1]


def test_cli_generate_out_dir_writes_one_file_per_caption(demos: Path, tmp_path: Path, loads: list[int]) -> None:
    res = run("generate", "dog bark", "rain", "--demos", demos, "--out-dir", tmp_path / "out", "--crop", "0.5", "-q")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dog_bark.wav", "rain.wav"]
    assert [line.split("\t")[:2] for line in res.stdout.splitlines()] == [
        ["dog bark", str(tmp_path / "out" / "dog_bark.wav")],
        ["rain", str(tmp_path / "out" / "rain.wav")],
    ]
    assert res.stderr == ""


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of five 0.5 s tones."""
    return write_label_demos(
        tmp_path_factory.mktemp("classes"),
        {"dog_bark": 300.0, "rain": 2000.0, "sea_waves": 900.0},
        clips=5,
        seconds=0.5,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["generate", "dog bark", "--demos", "{demos}"], "no output given"),
        (["generate", "", "--demos", "{demos}", "-o", "{tmp}/x.wav"], "caption 1 of 1 is empty"),
        (["generate", "a", "b", "--demos", "{demos}", "-o", "{tmp}/x.wav"], "-o takes one input"),
        (["generate", "a", "--demos", "{demos}", "-o", "{tmp}/exists.wav"], "exists (fix: pass --force"),
        (["generate", "a", "--demos", "{demos}", "-o", "{tmp}/x.mp3"], "unsupported output format"),
        (["generate", "a", "a", "--demos", "{demos}", "--out-dir", "{tmp}/o"], "2 inputs would write this one"),
        (["generate", "a", "--demos", "{tmp}/nodemos", "-o", "{tmp}/x.wav"], "no such demonstration folder"),
        (["generate", "a", "--demos", "{demos}", "-o", "{tmp}/x.wav", "--seconds", "0"], "--seconds 0"),
        (["generate", "a", "--demos", "{demos}", "-o", "{tmp}/x.wav", "--seconds", "inf"], "--seconds inf"),
        (["generate", "a", "--demos", "{demos}", "-o", "{tmp}/x.wav", "--mode", "bogus"], "--mode 'bogus'"),
        (["eval", "generate", "{tmp}/nodemos"], "no such demonstration folder"),
        (["eval", "generate", "{classes}", "--shots", "4"], "held out need 6"),
        (["eval", "generate", "{classes}", "--markdown", "{tmp}/exists.wav"], "exists (fix: pass --force"),
        (["eval", "generate", "{classes}", "--out-dir", "{tmp}/exists.wav"], "is not a folder"),
        (["eval", "generate", "{classes}", "--crop", "0.5", "--seconds", "-1"], "--seconds -1"),
        (["eval", "generate", "{classes}", "--mode", "bogus"], "--mode 'bogus'"),
    ],
)
def test_bad_arguments_fail_before_models_load(
    args: list[str], needle: str, demos: Path, classes: Path, tmp_path: Path, loads: list[int]
) -> None:
    (tmp_path / "exists.wav").write_bytes(b"x")
    argv = [
        a.replace("{tmp}", str(tmp_path)).replace("{demos}", str(demos)).replace("{classes}", str(classes))
        for a in args
    ]
    res = run(*argv)
    assert res.exit_code == 2, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], res.output
    assert "Traceback" not in res.output
    assert loads == []


# -- evaluation ------------------------------------------------------------------------------


def test_split_is_seeded_and_disjoint(classes: Path) -> None:
    from uniaudio_cli.tasks.demos import load_demo_folder

    clips = load_demo_folder(classes).clips
    a = split_clips(clips, shots=2, seed=0)
    assert a == split_clips(clips, shots=2, seed=0)
    for label in clips:
        assert len(a.demos[label]) == 2 and len(a.heldout[label]) == 3
        assert sorted(a.demos[label] + a.heldout[label]) == clips[label]
    assert len(split_clips(clips, shots=2, seed=0, max_heldout=2).heldout["rain"]) == 2
    with pytest.raises(UsageError, match="'dog_bark' has 5 clips"):
        split_clips(clips, shots=4, seed=0)


def test_eval_generate_end_to_end(classes: Path, tmp_path: Path, loads: list[int]) -> None:
    md = tmp_path / "gen.md"
    res = run(
        "eval", "generate", classes, "--shots", "2", "--clips", "2", "--crop", "0.5",
        "--json", "--markdown", md, "--out-dir", tmp_path / "wavs",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["chance"] == pytest.approx(1 / 3)
    assert report["settings"]["mode"] == "default" and report["settings"]["seconds"] == 0.5
    systems = {s["name"]: s for s in report["systems"]}
    assert list(systems) == [GENERATED, HELDOUT, COPY, RANDOM]
    assert [systems[n]["clips"] for n in systems] == [6, 9, 6, 6]
    for s in systems.values():
        for judge in ("prototype", "mfcc"):
            assert 0.0 <= s[f"{judge}_accuracy"] <= 1.0
            low, high = s[f"{judge}_wilson95"]
            assert low <= s[f"{judge}_accuracy"] <= high
        assert all(i["prototype"] in ("dog_bark", "rain", "sea_waves") for i in s["items"])
    gen_items = systems[GENERATED]["items"]
    assert [(i["label"], i["seed"]) for i in gen_items[:2]] == [("dog_bark", 0), ("dog_bark", 1)]
    assert {i["caption"] for i in gen_items} == {"dog bark", "rain", "sea waves"}
    assert all(sf.info(i["wav"]).frames == 8000 for i in gen_items)
    assert sorted(p.relative_to(tmp_path / "wavs").as_posix() for p in (tmp_path / "wavs").rglob("*.wav")) == [
        f"{c}/{k}.wav" for c in ("dog_bark", "rain", "sea_waves") for k in (0, 1)
    ]
    # Held-out clips are judged against the others only, never against themselves or the demonstrations.
    demos = {p for ps in report["settings"]["demos"].values() for p in ps}
    assert not demos & {i["source"] for i in systems[HELDOUT]["items"]}
    assert {i["source"] for i in systems[COPY]["items"]} <= demos
    text = md.read_text()
    for row in (GENERATED, HELDOUT, COPY, RANDOM, "chance (1/3)"):
        assert f"| {row} |" in text
    assert "Generated clips per class" in text
    assert loads == [1]


def test_a_captions_codes_stay_within_each_layers_codes(models) -> None:
    """Demonstrations made in memory may hold any id; the default mode's per-caption masks
    allow only ids that are codes of their layer, so every written clip decodes."""
    llm, codec = models
    noise = np.random.default_rng(1).standard_normal(SR).astype(np.float32) * 0.1
    tokens = codec.encode(noise)
    tokens[0][0] = 0  # a special token: no code of layer 1
    gen = SoundGenerator(llm, codec, [SoundDemo("hum", tokens, SR)], GenerateOptions(temperature=0.0))
    for own, layer_mask in zip(gen.caption_schedules["hum"], gen.schedule, strict=True):
        assert own.any() and not (own & ~layer_mask).any()
    assert not gen.caption_schedules["hum"][0][0]


def test_caption_case_is_ignored_both_ways_and_empty_demonstrations_are_refused(models) -> None:
    llm, codec = models
    noise = np.random.default_rng(2).standard_normal(SR).astype(np.float32) * 0.1
    tokens = codec.encode(noise)
    demos = [SoundDemo("Dog_Bark", tokens, SR), SoundDemo("rain", tokens, SR)]
    gen = SoundGenerator(llm, codec, demos, GenerateOptions(temperature=0.0))
    assert gen.match_caption("dog bark") == ("Dog_Bark", 1.0)  # exact, not the LLM's guess
    # Captions with fewer clips sit out the later shots; every clip is in the prompt, interleaved.
    uneven = SoundGenerator(llm, codec, [*demos, SoundDemo("Dog_Bark", tokens, SR)], GenerateOptions(temperature=0.0))
    assert [d.caption for d in uneven.ordered_demos()] == ["Dog_Bark", "rain", "Dog_Bark"]
    with pytest.raises(UsageError, match="has no audio tokens"):
        SoundGenerator(llm, codec, [SoundDemo("x", [[], tokens[1], tokens[2]], SR)], GenerateOptions())
