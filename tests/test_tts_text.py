"""The default TTS mode's text step: the question sets and examples as data, and on a tiny random
LLaMA the plumbing of candidate scoring, contextual calibration, the ordering ensemble and the
warning/refusal of unsure answers (what the answers are worth is measured by bench/tts_text.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_tasks import tiny_models, write_label_demos
from uniaudio_cli.decoding import PrefixCache, continuation_logprobs
from uniaudio_cli.errors import UsageError
from uniaudio_cli.evaluate.tts_eval import QUESTIONS
from uniaudio_cli.llm import LoadedLLM
from uniaudio_cli.paths import ENV_HOME, home_dir
from uniaudio_cli.prompt_store import PromptStore
from uniaudio_cli.prompts import PromptTemplate, prompts_dir
from uniaudio_cli.tasks.demos import load_demo_folder
from uniaudio_cli.tasks.tts import (
    AnswerExamples,
    Speech,
    Synthesizer,
    TextAnswerer,
    TTSOptions,
    candidate_logprobs,
)

DIGITS = [str(d) for d in range(10)]
EVAL_SETS = ["arithmetic", "reasoning", "multistep"]
ANSWERABLE_SETS = [*EVAL_SETS, "dev"]
UNANSWERABLE_SETS = ["dev_unanswerable", "unanswerable"]
TEXTS = ["1", "2", "3"]
# A few examples for the tiny model (its word-level vocabulary reads most of them as unknowns).
# The user's model cache, read before conftest isolates each test (as in tests/test_prompts.py).
USER_HOME = os.environ.get(ENV_HOME) or str(home_dir())
EXAMPLES = AnswerExamples((("1+1", "2"), ("3", "3"), ("2-1", "1"), ("4+4", "8")), ("N/A",))


def load_set(name: str) -> list[tuple[str, str | None]]:
    data = json.loads((prompts_dir() / "tts_questions" / f"{name}.json").read_text())
    return [(q["question"], q["answer"]) for q in data["questions"]]


def norm(text: str) -> str:
    """Case and spacing do not make a question new."""
    return re.sub(r"\s+", " ", text.strip().lower())


# -- data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EVAL_SETS)
def test_evaluation_sets_hold_20_single_digit_questions(name: str) -> None:
    questions = load_set(name)
    assert len(questions) == 20
    assert all(a in DIGITS for _, a in questions)
    assert len({norm(q) for q, _ in questions}) == 20


def test_unanswerable_sets_have_no_single_digit_answer() -> None:
    for name in UNANSWERABLE_SETS:
        questions = load_set(name)
        assert questions and all(a is None or a not in DIGITS for _, a in questions)
    assert "../evil" in {q for q, _ in load_set("unanswerable")}


def test_question_sets_do_not_overlap_the_examples_or_each_other() -> None:
    examples = AnswerExamples.load(TTSOptions().answer_examples)
    shown = {norm(q) for q, _ in examples.examples}
    seen: dict[str, str] = {norm(q): "paper" for q, _ in QUESTIONS}
    assert not shown & set(seen), "an example is one of the paper's questions"
    for name in [*ANSWERABLE_SETS, *UNANSWERABLE_SETS]:
        for q, _ in load_set(name):
            assert norm(q) not in shown, f"{name}: {q!r} is an in-context example"
            assert norm(q) not in seen, f"{name}: {q!r} is also in {seen.get(norm(q))}"
            seen[norm(q)] = name


def test_shipped_examples_cover_every_digit_and_calibrate() -> None:
    examples = AnswerExamples.load(TTSOptions().answer_examples)
    answers = [a for _, a in examples.examples]
    assert set(answers) == set(DIGITS)
    assert max(answers.count(d) for d in DIGITS) == min(answers.count(d) for d in DIGITS)
    assert examples.content_free


def test_bad_examples_file_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"examples": 3}')
    with pytest.raises(UsageError, match="not a list of text examples"):
        AnswerExamples.load(bad)


# -- plumbing on a tiny LLaMA ------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    return tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="module")
def llm(models) -> LoadedLLM:
    return models[0]


def answerer(llm: LoadedLLM, **kw) -> TextAnswerer:
    kw.setdefault("examples", EXAMPLES)
    return TextAnswerer(llm, TEXTS, PromptTemplate.load("tts_answer"), **kw)


def test_candidate_logprobs_runs_a_shared_head_once(llm: LoadedLLM) -> None:
    prefix = PrefixCache(llm.model, [5, 9, 17, 3], llm.device, llm.context_length)
    query = [12, 7]
    shared = [[20, 30], [20, 31], [20, 32, 33]]
    full = continuation_logprobs(prefix, query, shared)
    fast = candidate_logprobs(prefix, query, shared)
    # The shared head's log-probability is left out: the same constant for every candidate.
    torch.testing.assert_close(fast - fast[0], full - full[0], rtol=0, atol=1e-4)
    assert not torch.allclose(fast, full)
    # A candidate that is the head itself cannot leave it out: plain scoring.
    prefix_of_other = [[20], [20, 31]]
    torch.testing.assert_close(
        candidate_logprobs(prefix, query, prefix_of_other), continuation_logprobs(prefix, query, prefix_of_other)
    )


def test_orderings_permute_the_kept_examples(llm: LoadedLLM) -> None:
    a = answerer(llm, orderings=3)
    assert len(a.prefixes) == len(a.log_priors) == 3
    kept = [(q, x) for q, x in EXAMPLES.examples if x in TEXTS]  # "4+4" -> "8" is no demonstration text
    assert len(kept) == 3
    assert a.prefixes[0].prefix == a._prefix_ids(kept)
    assert sorted(a.prefixes[1].prefix) == sorted(a.prefixes[0].prefix)
    assert len({tuple(p.prefix) for p in a.prefixes}) > 1
    with pytest.raises(UsageError, match="orderings"):
        answerer(llm, orderings=0)


def test_calibration_divides_by_the_content_free_prior(llm: LoadedLLM) -> None:
    raw = answerer(llm, calibrate=False)
    cal = answerer(llm, calibrate=True)
    assert torch.equal(raw.log_priors[0], torch.zeros(3))
    text = "1+2"
    raw_lp = raw.distributions(text)[0]
    prior = raw.distributions("N/A")[0]
    torch.testing.assert_close(cal.log_priors[0], prior)
    torch.testing.assert_close(cal.distributions(text)[0], torch.log_softmax(raw_lp - prior, dim=0))
    # The content-free question itself is left with no preference at all.
    torch.testing.assert_close(cal.distributions("N/A").exp(), torch.full((1, 3), 1 / 3))


def test_prior_averages_several_content_free_questions(llm: LoadedLLM) -> None:
    raw = answerer(llm, calibrate=False)
    cal = answerer(llm, examples=AnswerExamples(EXAMPLES.examples, ("N/A", "", "[MASK]")))
    mean = torch.stack([raw.distributions(c)[0].exp() for c in ("N/A", "", "[MASK]")]).mean(0)
    torch.testing.assert_close(cal.log_priors[0], mean.log())


def test_calibration_priors_are_kept_in_the_prompt_store(llm: LoadedLLM, tmp_path: Path, monkeypatch) -> None:
    fresh = answerer(llm, orderings=2)
    stored = dataclasses.replace(llm, prompt_store=PromptStore(tmp_path / "kv", llm.model, 2**30))
    first = answerer(stored, orderings=2)
    for a, b in zip(first.log_priors, fresh.log_priors, strict=True):
        assert torch.equal(a, b)
    # The next run reads them back: no calibration pass at all, and the same priors.
    passes: list[str] = []
    compute = TextAnswerer._log_distribution

    def counted(self: TextAnswerer, prefix: PrefixCache, text: str) -> torch.Tensor:
        passes.append(text)
        return compute(self, prefix, text)

    monkeypatch.setattr(TextAnswerer, "_log_distribution", counted)
    second = answerer(stored, orderings=2)
    assert passes == []
    for a, b in zip(second.log_priors, fresh.log_priors, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(second.distributions("1+2"), fresh.distributions("1+2"))
    # Other candidates (or prompts, or content-free token ids) are another key: computed, once
    # per prompt.
    passes.clear()
    other = TextAnswerer(stored, ["1", "2"], PromptTemplate.load("tts_answer"), EXAMPLES, orderings=2)
    assert passes == ["N/A", "N/A"] and other.log_priors[0].shape == (2,)


def test_answer_is_the_ensemble_mean(llm: LoadedLLM) -> None:
    a = answerer(llm, orderings=3)
    reply = a("1+2")
    probs = a.distributions("1+2").exp().mean(0)
    assert reply.answer == TEXTS[int(probs.argmax())]
    assert reply.probability == pytest.approx(float(probs.max()))
    assert list(reply.probabilities) == TEXTS
    assert sum(reply.probabilities.values()) == pytest.approx(1.0)
    assert reply.warning is None  # no threshold


def test_unsure_answer_gets_a_warning_with_its_probability(llm: LoadedLLM) -> None:
    a = answerer(llm, orderings=2, min_probability=0.5)
    reply = a("N/A")  # calibrated to exactly uniform in every prompt
    assert reply.probability == pytest.approx(1 / 3)
    assert reply.warning is not None and "0.33 < 0.50" in reply.warning and repr(reply.answer) in reply.warning
    sure = answerer(llm, orderings=2, min_probability=1 / 3 - 1e-3)("N/A")
    assert sure.warning is None


def test_completeness_scores_what_follows_an_answer_in_the_demos(llm: LoadedLLM) -> None:
    a = answerer(llm, orderings=2)
    newline = a.builder.text("\n")
    assert newline and a.endings == [newline] * 3  # "Answer: {answer}\n"
    reply = a("1+2")
    best = TEXTS.index(reply.answer)
    query = [*a.builder.render(a.builder.template.query, text="1+2"), *a.candidates[best]]
    expected = torch.cat([continuation_logprobs(p, query, [newline]) for p in a.prefixes]).exp().mean()
    assert reply.complete == pytest.approx(float(expected))
    unfinished = answerer(llm, orderings=2, min_complete=1.01)("1+2")
    assert unfinished.warning is not None and "ends there with probability" in unfinished.warning


def test_no_completeness_when_nothing_follows_answers(llm: LoadedLLM, tmp_path: Path) -> None:
    bare = tmp_path / "bare.json"
    bare.write_text(
        json.dumps({"name": "bare", "demo": "Question: {text} Answer: {answer}", "query": "Question: {text} Answer:"})
    )
    a = TextAnswerer(llm, TEXTS, PromptTemplate.load(bare), EXAMPLES, min_complete=1.01)
    reply = a("1+2")
    assert reply.complete is None and reply.warning is None


# -- the synthesizer ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_demos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = write_label_demos(
        tmp_path_factory.mktemp("digits"), {"1": 250.0, "2": 700.0, "3": 1200.0}, clips=1, seconds=0.96
    )
    return load_demo_folder(root).clips


def test_speech_carries_the_text_probability(models, digit_demos) -> None:
    llm, codec = models
    sure = TTSOptions(answer_orderings=2, min_answer_probability=0.0, min_answer_complete=0.0)
    synth = Synthesizer.from_files(llm, codec, digit_demos, sure)
    speech = synth.speak("1+1")
    reply = synth.answer("1+1")
    assert speech.answer == reply.answer and speech.answer_probability == pytest.approx(reply.probability)
    assert reply.complete is not None and 0 < reply.complete < 1
    assert 1 / 3 <= speech.answer_probability <= 1 and speech.warning is None
    paper = Synthesizer.from_files(llm, codec, digit_demos, TTSOptions(mode="paper")).speak("1+1")
    assert paper.answer is None and paper.answer_probability is None and paper.warning is None


def test_unsure_text_is_warned_or_refused(models, digit_demos) -> None:
    llm, codec = models
    # Above any reachable probability: every answer is unsure.
    warn = Synthesizer.from_files(llm, codec, digit_demos, TTSOptions(min_answer_probability=1.01))
    speech = warn.speak("hello")
    assert speech.warning is not None and f"{speech.answer_probability:.2f}" in speech.warning
    assert np.isfinite(speech.audio).all()
    refuse = Synthesizer.from_files(
        llm, codec, digit_demos, TTSOptions(min_answer_probability=1.01, refuse_unsure=True)
    )
    with pytest.raises(UsageError, match=r"refused: unsure answer '\d' \(probability 0\.\d\d < 1\.01"):
        refuse.speak("../evil")


def test_speech_keeps_its_positional_fields() -> None:
    speech = Speech("1+1", np.zeros(4, np.float32), 16000, "2", None, [[1]])
    assert speech.answer_probability is None and speech.warning is None


# -- the real default LLM ------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore")
def test_real_llm_warns_on_texts_without_a_digit_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cases the warning exists for, with the shipped thresholds (measured: bench/tts_text.py)."""
    from uniaudio_cli.llm import load_llm

    monkeypatch.setenv(ENV_HOME, USER_HOME)
    opts = TTSOptions()
    a = TextAnswerer(
        load_llm(None, device="cpu"),
        DIGITS,
        PromptTemplate.load(opts.answer_template),
        AnswerExamples.load(opts.answer_examples),
        opts.answer_orderings,
        opts.calibrate,
        opts.min_answer_probability,
        opts.min_answer_complete,
    )
    sure = a("1+1")
    assert sure.answer == "2" and sure.warning is None
    for text in ("../evil", "hello", "what is 7 times 8"):
        reply = a(text)
        assert reply.warning is not None, (text, reply)
