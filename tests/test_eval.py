"""`uniaudio eval classify / tts / denoise` and their library: episode sampling, resuming,
baselines, intervals, mixtures, reports; on the tiny LLaMA + codec of tests/test_tasks.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.test_tasks import write_label_demos, write_pairs
from uniaudio_cli.cli import app
from uniaudio_cli.errors import UsageError
from uniaudio_cli.evaluate import classify_eval as ce
from uniaudio_cli.evaluate.classify_eval import (
    ClassifyEvalResult,
    ConfigResult,
    EpisodeConfig,
    evaluate_classification,
    mfcc_features,
    nearest_neighbour,
    paper_grid,
    sample_episode,
    ways_grid,
)
from uniaudio_cli.evaluate.denoise_eval import build_mixture, evaluate_denoising, mix_at_snr, snr_db
from uniaudio_cli.evaluate.report import to_json, to_markdown
from uniaudio_cli.evaluate.store import ResultStore, wilson_interval

SR = 16000


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three labels of four 0.5 s tones each."""
    return write_label_demos(
        tmp_path_factory.mktemp("labelled"), {"dog": 300.0, "rain": 2000.0, "sea": 900.0}, clips=4, seconds=0.5
    )


def _fake_clips(labels: int = 3, per_label: int = 8) -> dict[str, list[Path]]:
    return {f"l{i}": [Path(f"l{i}/{k}.wav") for k in range(per_label)] for i in range(labels)}


# -- episodes --------------------------------------------------------------------------------


def test_episodes_are_seeded_disjoint_and_balanced() -> None:
    clips = _fake_clips()
    a = sample_episode(clips, ways=3, shots=2, queries=7, seed=5, index=0)
    assert a == sample_episode(clips, ways=3, shots=2, queries=7, seed=5, index=0)
    assert a != sample_episode(clips, ways=3, shots=2, queries=7, seed=5, index=1)
    assert a != sample_episode(clips, ways=3, shots=2, queries=7, seed=6, index=0)
    assert sorted(a.labels) == sorted(clips) and set(a.demos) == set(a.labels)
    demos = {p for ps in a.demos.values() for p in ps}
    assert all(len(ps) == 2 for ps in a.demos.values())
    assert len(a.queries) == 7 and not demos & {p for p, _ in a.queries}
    counts = sorted(sum(lb == label for _, lb in a.queries) for label in a.labels)
    assert counts == [2, 2, 3]
    assert all(p.parent.name == lb for p, lb in a.queries)  # the truth is the clip's folder
    # More shots keep the queries and extend the demonstrations.
    b = sample_episode(clips, ways=3, shots=3, queries=7, seed=5, index=0)
    assert b.queries == a.queries and b.labels == a.labels
    assert all(b.demos[lb][:2] == a.demos[lb] for lb in a.labels)
    assert ce.max_queries(clips, ways=2, shots=3) == 10 and ce.max_queries(clips, ways=3, shots=8) == 0
    # Any draw of labels must supply the queries: the smallest labels decide, not the largest.
    sizes = {"a": 5, "b": 3, "c": 10}
    uneven = {lb: [Path(f"{lb}{i}.wav") for i in range(n)] for lb, n in sizes.items()}
    assert ce.max_queries(uneven, ways=2, shots=1) == 4
    with pytest.raises(UsageError, match="queries need"):
        sample_episode(clips, ways=2, shots=4, queries=10, seed=0, index=0)
    with pytest.raises(UsageError, match="need 4 labels"):
        sample_episode(clips, ways=4, shots=1, queries=4, seed=0, index=0)


def test_grids_follow_the_paper() -> None:
    grid = paper_grid(EpisodeConfig(method="icl", ways=3))
    assert [c.setting for c in grid[:5]] == [
        "no induction 1-shot",
        "induction 1-shot",
        "induction 3-shot",
        "induction 1-shot x2 repeats",
        "induction 1-shot x3 repeats",
    ]
    assert [c.layers for c in grid] == ["semantic"] * 5 + ["all"] * 5 and {c.ways for c in grid} == {3}
    assert len({c.key for c in grid}) == 10
    assert [c.ways for c in ways_grid(EpisodeConfig(method="icl"))] == [2, 3, 4, 5, 6]


# -- baselines and intervals ------------------------------------------------------------------


def test_mfcc_nearest_neighbour_separates_tones() -> None:
    t = np.arange(SR // 2) / SR
    rng = np.random.default_rng(0)

    def tone(freq: float) -> np.ndarray:
        return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)

    demos = {"low": [mfcc_features(tone(250.0), SR)], "high": [mfcc_features(tone(3000.0), SR)]}
    queries = [("low", f) for f in (230.0, 260.0, 280.0)] + [("high", f) for f in (2800.0, 3100.0, 3300.0)]
    hits = [nearest_neighbour(demos, mfcc_features(tone(f), SR)) == lb for lb, f in queries]
    assert all(hits)


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    lo, hi = wilson_interval(30, 40)
    assert lo < 0.75 < hi and hi - lo < wilson_interval(3, 4)[1] - wilson_interval(3, 4)[0]
    assert wilson_interval(0, 0) is None


# -- resumable results ------------------------------------------------------------------------


def test_store_survives_a_torn_line_and_refuses_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    store = ResultStore(path, {"a": 1})
    store.add("x", {"v": 1.5})
    with open(path, "a") as f:
        f.write('{"type": "record", "key": "y", "rec')  # killed mid-write
    again = ResultStore(path, {"a": 1})
    assert list(again) == ["x"] and again.get("x") == {"v": 1.5}
    again.add("z", {"v": 2})
    assert list(ResultStore(path, {"a": 1})) == ["x", "z"]
    with pytest.raises(UsageError, match="other settings"):
        ResultStore(path, {"a": 2})
    # A last record that parses but lost its newline is torn too: the next record starts a line.
    text = path.read_text()
    path.write_text(text[:-1])
    torn = ResultStore(path, {"a": 1})
    assert list(torn) == ["x"]
    torn.add("w", {"v": 3})
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()[1:]] == ["x", "w"]
    # Lines that are JSON but no records end the good part; a file that is not ours is refused.
    with open(path, "a") as f:
        f.write('{"type": "record"}\n[1]\n')
    assert list(ResultStore(path, {"a": 1})) == ["x", "w"]
    other = tmp_path / "other.jsonl"
    for first in ("[1]\n", '"text"\n', '{"format": "something else"}\n'):
        other.write_text(first)
        with pytest.raises(UsageError, match="not a uniaudio results file"):
            ResultStore(other, {"a": 1})


def test_resume_skips_finished_episodes(models, labelled: Path, tmp_path: Path, monkeypatch) -> None:
    llm, codec = models
    results = tmp_path / "r.jsonl"
    cfg = EpisodeConfig(method="icl", ways=2)
    first = evaluate_classification(llm, codec, labelled, [cfg], episodes=2, queries=3, results=results, progress=False)
    assert first.configs[0].computed == 2 and len(first.configs[0].episodes) == 2
    calls = []
    real = ce.run_episode
    monkeypatch.setattr(ce, "run_episode", lambda *a, **k: calls.append(a[2].index) or real(*a, **k))
    second = evaluate_classification(
        llm, codec, labelled, [cfg], episodes=3, queries=3, results=results, progress=False
    )
    assert calls == [2] and second.configs[0].computed == 1
    assert second.configs[0].episodes[:2] == first.configs[0].episodes
    assert len(results.read_text().splitlines()) == 1 + 3  # header + one line per episode
    c = second.configs[0]
    assert c.queries == 9 and 0.0 <= c.accuracy.mean <= 1.0 and c.chance == 0.5
    for e in c.episodes:
        assert e["total"] == 3 and e["correct"] == sum(q["pred"] == q["label"] for q in e["queries"])
        assert {q["pred"] for q in e["queries"]} <= set(e["labels"])
    # Tones of clearly different pitch: the MFCC baseline gets (nearly) all of them.
    assert c.mfcc.mean >= 0.8
    md = to_markdown(second.to_report())
    for text in ("MFCC nearest neighbour", "random guess (empirical)", "chance (1/2)", "95 % Wilson", str(results)):
        assert text in md
    assert json.loads(to_json(second.to_report()))["configs"][0]["episodes"] == 3


def test_grid_reports_render_with_the_paper_rows() -> None:
    def fake(cfg: EpisodeConfig, i: int) -> dict:
        return {
            "total": 10,
            "correct": 5 + i,
            "mfcc_correct": 7,
            "random_correct": 4,
            "seconds": 1.0,
            "encode_seconds": 0.2,
        }

    grid = paper_grid(EpisodeConfig(method="icl", ways=2))
    res = ClassifyEvalResult(
        "data/esc10",
        "paper",
        [ConfigResult(c, [fake(c, 0), fake(c, 1)]) for c in grid],
        "r.jsonl",
        {"queries": 10, "seed": 0},
    )
    md = to_markdown(
        res.to_report(
            paper={"task": "ESC-50", "random": 45, "semantic": [48, 60, 57, 57, 73], "all": [41, 48, 55, 54, 62]}
        )
    )
    assert "### Table 2 layout: 2-way accuracy %" in md
    assert "| ours | semantic layer | 55.0 | 55.0 | 55.0 | 55.0 | 55.0 | 40.0 | 70.0 |" in md
    assert "| paper (ESC-50) | all 3 layers | 41.0 | 48.0 | 55.0 | 54.0 | 62.0 | 45.0 | – |" in md
    assert "induction 1-shot x3 repeats" in md and "ms / query" in md
    ways = ClassifyEvalResult(
        "d",
        "ways",
        [ConfigResult(c, [fake(c, 0)]) for c in ways_grid(EpisodeConfig(method="icl"))],
        "r.jsonl",
        {"queries": 10, "seed": 0},
    )
    md = to_markdown(ways.to_report(paper={"ways": {2: 60, 3: 41, 4: 36, 5: 33, 6: 17}}))
    assert "| chance 1/N | 50.0 | 33.3 | 25.0 | 20.0 | 16.7 |" in md and "| paper | 60.0 |" in md


# -- denoising --------------------------------------------------------------------------------


def test_mixtures_have_the_asked_snr() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    clean = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    noises = [
        ("white", (0.05 * rng.standard_normal(3 * SR)).astype(np.float32)),
        ("short", (0.3 * rng.standard_normal(SR)).astype(np.float32)),
    ]  # shorter than the clean: looped
    for snr in (-5.0, 0.0, 5.0, 10.0):
        mix = build_mixture(clean, "a.wav", noises, snr, seed=1)
        assert snr_db(mix.clean, mix.noisy - mix.clean) == pytest.approx(snr, abs=1e-3)
        assert len(mix.noisy) == len(clean) and np.abs(mix.noisy).max() <= 0.99 + 1e-6
        again = build_mixture(clean, "a.wav", noises, snr, seed=1)
        assert (again.noise, again.offset) == (mix.noise, mix.offset) and np.array_equal(again.noisy, mix.noisy)
    # A mixture that would clip is scaled down with its reference: same SNR.
    noisy, ref = mix_at_snr(clean * 4, noises[0][1][: len(clean)], -10.0)
    assert np.abs(noisy).max() == pytest.approx(0.99, abs=1e-6)
    assert snr_db(ref, noisy - ref) == pytest.approx(-10.0, abs=1e-3)


def test_rnnoise_baseline_is_aligned_with_its_input() -> None:
    pytest.importorskip("pyrnnoise")
    from uniaudio_cli.evaluate.denoise_eval import rnnoise

    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    # Voiced-like bursts: a harmonic-rich buzz, switched on and off, that RNNoise keeps.
    buzz = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20)) * (np.sin(2 * np.pi * 2 * t) > 0)
    x = (0.1 * buzz + 0.003 * rng.standard_normal(SR)).astype(np.float32)
    y = rnnoise(x, SR)
    assert y.shape == x.shape and y.dtype == np.float32
    lags = range(-40, 41)
    corr = [float(np.dot(x[100 + lag : SR - 100 + lag], y[100 : SR - 100])) for lag in lags]
    assert abs(list(lags)[int(np.argmax(corr))]) <= 1  # its 20 ms delay is taken out


def test_denoise_eval_resumes(models, tmp_path: Path) -> None:
    pytest.importorskip("noisereduce")
    pytest.importorskip("pyrnnoise")
    llm, codec = models
    clean, noise = tmp_path / "clean", tmp_path / "noise"
    write_label_demos(clean, {"s1": 200.0, "s2": 350.0}, clips=1, seconds=0.6)
    write_label_demos(noise, {"hum": 50.0}, clips=1, seconds=1.0)
    kw = dict(
        snrs=(0.0, 10.0),
        seconds=0.5,
        demos=write_pairs(tmp_path / "pairs"),
        results=tmp_path / "d.jsonl",
        progress=False,
    )
    one = evaluate_denoising(llm, codec, clean, noise, max_files=1, **kw)
    assert len(one.records) == 2 and {r["snr"] for r in one.records} == {0.0, 10.0}
    for r in one.records:
        assert r["measured_snr"] == pytest.approx(r["snr"], abs=1e-3)
        assert set(r["metrics"]) == {"noisy", "uniaudio", "noisereduce", "rnnoise"}
    two = evaluate_denoising(llm, codec, clean, noise, max_files=2, keep_examples=1, **kw)
    assert two.records[:2] == one.records and len(two.records) == 4 and len(two.codec_records) == 2
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 1 + 4 + 2
    md = to_markdown(two.to_report(paper={"pesq": 2.17, "stoi": 0.57}))
    assert "codec only (clean resynthesis, upper bound)" in md and "| 0 dB | 10 dB |" in md
    assert "RNNoise (pyrnnoise)" in md
    assert two.examples[0]["uniaudio"].shape == two.examples[0]["clean"].shape
    assert len(two.examples) == 1  # as many as asked for
    # Per-SNR figures hold that SNR's records only; no SNR pools them all.
    for snr in (0.0, 10.0):
        assert two.values("noisy", "stoi", snr) == [
            r["metrics"]["noisy"]["stoi"]
            for r in two.records
            if r["snr"] == snr and r["metrics"]["noisy"].get("stoi") is not None
        ]
    assert len(two.values("noisy", "pesq")) == len(two.values("noisy", "pesq", 0.0)) + len(
        two.values("noisy", "pesq", 10.0)
    )


# -- TTS --------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_tts_eval_judges_every_question(models, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("pocketsphinx")
    from uniaudio_cli.evaluate import tts_eval

    monkeypatch.setattr(tts_eval, "load_dnsmos", lambda: (None, "disabled in tests"))
    llm, codec = models
    res = tts_eval.evaluate_tts(llm, codec, modes=("default",), shots=1, out_dir=tmp_path / "wav", progress=False)
    names = [s.name for s in res.systems]
    assert names == ["uniaudio default", "codec only", "espeak-ng"]
    assert all(len(s.items) == 20 for s in res.systems)
    assert res.systems[0].text_accuracy() is not None
    assert res.systems[2].accuracy() >= 0.8  # the recogniser understands espeak-ng's digits
    assert len(list((tmp_path / "wav" / "uniaudio_default").glob("*.wav"))) == 20
    md = to_markdown(res.to_report())
    assert "DNSMOS not measured: disabled in tests" in md and "| how many days in a week | 7 |" in md


def test_tts_question_sets_load_and_bad_ones_are_usage_errors(tmp_path: Path) -> None:
    from uniaudio_cli.errors import UsageError
    from uniaudio_cli.evaluate.tts_eval import QUESTION_SETS, QUESTIONS, load_questions, question_set_name

    assert load_questions("paper") == QUESTIONS
    for name in QUESTION_SETS[1:]:
        qs = load_questions(name)
        assert len(qs) == 20 and all(len(a) == 1 and a.isdigit() for _, a in qs)
    own = tmp_path / "own.json"
    own.write_text('{"questions": [{"question": "3+3", "answer": "6"}, {"question": "hello", "answer": null}]}')
    assert load_questions(own) == (("3+3", "6"),)  # a text without an answer cannot be scored
    bad = tmp_path / "bad.json"
    bad.write_text('{"questions": [{"question": "hello", "answer": null}]}')
    multi = tmp_path / "multi.json"
    multi.write_text('{"questions": [{"question": "3+3", "answer": "6"}, {"question": "6+6", "answer": "12"}]}')
    cases = [(bad, "no question with an answer"), ("nope", "not a question set"), (multi, "'6\\+6' -> '12'")]
    for arg, match in cases:
        with pytest.raises(UsageError, match=match):
            load_questions(arg)
    assert [question_set_name(q) for q in ("paper", "arithmetic", own)] == ["paper", "arithmetic", "own"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_tts_eval_on_a_question_set(models, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("pocketsphinx")
    from uniaudio_cli.evaluate import tts_eval

    monkeypatch.setattr(tts_eval, "load_dnsmos", lambda: (None, "disabled in tests"))
    own = tmp_path / "two.json"
    own.write_text('{"questions": [{"question": "3+3", "answer": "6"}, {"question": "9-8", "answer": "1"}]}')
    llm, codec = models
    res = tts_eval.evaluate_tts(
        llm, codec, modes=("default",), shots=1, progress=False, references=False, questions=own
    )
    assert [len(s.items) for s in res.systems] == [2] and res.question_set == "two"
    md = to_markdown(res.to_report())
    assert "question set two (2 questions)" in md and "| 9-8 | 1 |" in md


# -- CLI --------------------------------------------------------------------------------------


def test_cli_eval_classify(models, labelled: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("uniaudio_cli.cli.load_models", lambda *a, **k: models)
    results, md = tmp_path / "r.jsonl", tmp_path / "r.md"
    args = [
        "eval",
        "classify",
        str(labelled),
        "--ways",
        "2",
        "--episodes",
        "2",
        "--queries",
        "2",
        "--results",
        str(results),
        "--quiet",
    ]
    res = CliRunner().invoke(app, [*args, "--json", "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["configs"][0]["episodes"] == 2 and out["configs"][0]["computed_episodes"] == 2
    assert "MFCC nearest neighbour" in md.read_text()
    res = CliRunner().invoke(app, [*args, "--json"])  # everything read back from the results file
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["configs"][0]["computed_episodes"] == 0
    res = CliRunner().invoke(app, [*args, "--method", "prototype", "--mode", "paper", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["configs"][0]["key"] == "2way-1shot-x1-ind-semantic-prototype-paper-cropwhole"
    res = CliRunner().invoke(app, [*args, "--markdown", str(md)])
    assert res.exit_code == 2 and "exists" in res.stderr
    res = CliRunner().invoke(app, [*args, "--grid", "nope"])
    assert res.exit_code == 2 and "--grid" in res.stderr
    res = CliRunner().invoke(app, [*args, "--shots", "3", "--queries", "4"])
    assert res.exit_code == 2 and "at most 2 queries" in res.stderr and "--queries 2" in res.stderr
    res = CliRunner().invoke(app, [*args, "--queries", "3"])  # other settings, same file
    assert res.exit_code == 2 and "other settings" in res.stderr


def test_cli_eval_denoise_snr_list_and_plots(models, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("noisereduce")
    pytest.importorskip("matplotlib")
    monkeypatch.setattr("uniaudio_cli.cli.load_models", lambda *a, **k: models)
    clean, noise = tmp_path / "clean", tmp_path / "noise"
    write_label_demos(clean, {"s1": 200.0}, clips=1, seconds=0.6)
    write_label_demos(noise, {"hum": 50.0}, clips=1, seconds=1.0)
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "denoise",
            str(clean),
            str(noise),
            "--snr",
            "0",
            "5",
            "--seconds",
            "0.5",
            "--quiet",
            "--json",
            "--demos",
            str(write_pairs(tmp_path / "pairs")),
            "--results",
            str(tmp_path / "d.jsonl"),
            "--plot",
            str(tmp_path / "plots"),
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["snrs"] == [0.0, 5.0] and len(out["mixtures"]) == 2
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["denoise_example_1.png", "denoise_example_2.png", "denoise_vs_snr.png"]  # one per mixture


def test_denoise_results_are_tied_to_the_demonstrations_and_noise_on_disk(tmp_path: Path) -> None:
    # Remaking the demonstration pairs (or the noise) in place must start a new results file, not
    # resume the old pairs' mixtures as if they were the new ones'.
    import os
    from types import SimpleNamespace

    from uniaudio_cli.evaluate.denoise_eval import run_settings
    from uniaudio_cli.evaluate.store import default_results_path

    pairs = write_pairs(tmp_path / "pairs")
    noise = tmp_path / "noise"
    write_label_demos(noise, {"hum": 50.0}, clips=1, seconds=1.0)
    llm = SimpleNamespace(vocabulary=SimpleNamespace(name="tiny"))
    codec = SimpleNamespace(source=None)

    def path() -> Path:
        s = run_settings(llm, codec, tmp_path, [tmp_path / "a.wav"], noise, 4.0, 0, "default", pairs, None, 1)
        return default_results_path("denoise", s)

    first = path()
    assert path() == first
    demo = next(pairs.rglob("noisy*"))
    os.utime(demo, ns=(demo.stat().st_atime_ns, demo.stat().st_mtime_ns + 10**9))
    second = path()
    assert second != first
    clip = next(noise.rglob("*.wav"))
    os.utime(clip, ns=(clip.stat().st_atime_ns, clip.stat().st_mtime_ns + 10**9))
    assert path() not in (first, second)
