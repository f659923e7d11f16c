"""The few-shot tasks (classify, tts, denoise) end to end on a tiny LLaMA + a tiny codec built on
its vocabulary, plus demonstration folders and clip cropping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import write_tone
from tests.test_decoding import tiny_llama
from tests.test_prompts import build_tokenizer
from uniaudio_cli.bridge import build_vocab_spec, codebook_tables
from uniaudio_cli.codec.api import Codec, load_codec
from uniaudio_cli.codec.checkpoint import save_codec
from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.decoding import continuation_logprobs
from uniaudio_cli.errors import AudioError, UsageError
from uniaudio_cli.llm import LoadedLLM, Vocabulary
from uniaudio_cli.prompts import bos_ids
from uniaudio_cli.tasks import tts as tts_module
from uniaudio_cli.tasks.audio_gen import flatten
from uniaudio_cli.tasks.classify import Classifier, ClassifyOptions, classify_files
from uniaudio_cli.tasks.demos import crop_or_pad, load_demo_folder
from uniaudio_cli.tasks.denoise import DenoiseOptions, Denoiser, MaskDenoiser, TokenDenoiser, load_pair_folder
from uniaudio_cli.tasks.options import FITTED_TEMPERATURE, MaskSettings
from uniaudio_cli.tasks.prototype import acoustic_statistics, clip_features
from uniaudio_cli.tasks.tts import Synthesizer, TTSDemo, TTSOptions, copy_atypicality

SR = 16000
UNIT = 1920  # the tiny codec's pad_multiple: hop 480 x layer-1 stride 4
SPECIAL = {0, 1}


def tiny_models(folder: Path) -> tuple[LoadedLLM, Codec]:
    """A tiny LLaMA whose vocabulary is :func:`build_tokenizer`, and a random codec saved and
    loaded back on that vocabulary (its frozen codebooks are the LLaMA's input embeddings)."""
    model = tiny_llama()
    tok = build_tokenizer(size=model.config.vocab_size)
    emb = model.get_input_embeddings().weight.detach().float().clone()
    vocab = Vocabulary("tiny-llama", tok, emb, special_ids=[0, 1])
    dim = int(emb.shape[1])
    cfg = CodecConfig(
        backbone="small",
        latent_dim=16,
        small_dim=32,
        small_intermediate=64,
        small_encoder_layers=1,
        small_decoder_layers=1,
        codebook_sizes=[6, vocab.size, vocab.size],
        codebook_dims=[dim] * 3,
        vocab=build_vocab_spec(vocab, n_words=6),
    )
    torch.manual_seed(0)
    codec_model = LLMCodec(cfg).eval()
    assert cfg.vocab is not None
    codec_model.set_codebooks(*codebook_tables(cfg.vocab, vocab))
    codec = load_codec(save_codec(codec_model, folder / "codec"), vocabulary=vocab, device="cpu")
    return LoadedLLM(model=model, vocabulary=vocab, device=torch.device("cpu"), context_length=2048), codec


def write_label_demos(root: Path, labels: dict[str, float] | None = None, clips: int = 2, seconds: float = 1.0) -> Path:
    """``root/<label>/<k>.wav``: tones, one frequency per label."""
    for label, freq in (labels or {"dog": 300.0, "rain": 1500.0}).items():
        for k in range(clips):
            write_tone(root / label / f"{k}.wav", seconds=seconds, freq=freq * (1 + 0.05 * k))
    return root


def write_pairs(root: Path, seconds: float = 0.5) -> Path:
    """``root/<utt>/clean.wav + noisy*.wav`` (two utterances, three noisy versions)."""
    rng = np.random.default_rng(0)
    for utt, freq, n_noisy in (("u1", 400.0, 2), ("u2", 900.0, 1)):
        clean = write_tone(root / utt / "clean.wav", seconds=seconds, freq=freq)
        wav, _ = sf.read(clean, dtype="float32")
        for k in range(n_noisy):
            sf.write(root / utt / f"noisy{k}.wav", wav + 0.1 * rng.standard_normal(len(wav)).astype(np.float32), SR)
    return root


@pytest.fixture(scope="module")
def label_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_label_demos(tmp_path_factory.mktemp("labels"))


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("queries")
    return [write_tone(d / "q1.wav", 1.3, freq=320.0), write_tone(d / "q2.wav", 0.7, freq=1400.0)]


def test_tiny_models_are_consistent(models) -> None:
    llm, codec = models
    assert llm.vocabulary.size == len(llm.tokenizer) == llm.model.config.vocab_size
    layer1 = codec.bridge.valid_token_ids(0)
    assert llm.tokenizer.convert_ids_to_tokens(layer1)[:3] == ["Ġthe", "Ġdog", "Ġrain"]
    ids = codec.encode(np.zeros(SR, dtype=np.float32) + 0.1)
    assert [len(layer) for layer in ids] == [9, 18, 36]  # 1 s pads to 1.08 s = 36 frames


# -- classification --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["icl", "prototype", "fused"])
@pytest.mark.parametrize("mode", ["default", "paper"])
def test_classifier_returns_demo_labels(models, label_demos, queries, method, mode) -> None:
    llm, codec = models
    folder = load_demo_folder(label_demos)
    opts = ClassifyOptions(method=method, mode=mode, shots=2)
    results = list(classify_files(llm, codec, folder.pick(2), [*queries, label_demos / "missing.wav"], opts))
    for q, pred in zip(queries, results, strict=False):
        assert pred.path == str(q)
        assert pred.label in ("dog", "rain")
        assert list(pred.probabilities) == ["dog", "rain"]
        assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert pred.probability == max(pred.probabilities.values())
    # A bad query is handed back with its error; the run goes on.
    path, err = results[-1]
    assert path.name == "missing.wav" and "no such file" in str(err)


def test_layers_all_makes_longer_prompts(models, label_demos) -> None:
    llm, codec = models
    demos = load_demo_folder(label_demos).pick(1)
    sem = Classifier.from_files(llm, codec, demos, ClassifyOptions(method="icl", layers="semantic"))
    full = Classifier.from_files(llm, codec, demos, ClassifyOptions(method="icl", layers="all"))
    clip = label_demos / "dog" / "0.wav"
    assert len(sem.clip_tokens(clip)) == 9 and len(full.clip_tokens(clip)) == 9 + 18 + 36
    assert full.clip_tokens(clip)[:9] == sem.clip_tokens(clip)
    assert len(full.prefix_ids()) == len(sem.prefix_ids()) + 2 * (18 + 36)


def test_repeats_multiply_the_demonstration_block(models, label_demos) -> None:
    llm, codec = models
    demos = load_demo_folder(label_demos).pick(2)
    one = Classifier.from_files(llm, codec, demos, ClassifyOptions(method="icl", shots=2, repeats=1))
    three = Classifier.from_files(llm, codec, demos, ClassifyOptions(method="icl", shots=2, repeats=3))
    b = one.builder
    head, tail = b.induction(["dog", "rain"]), b.text(b.template.block)
    p1 = one.prefix_ids()
    assert p1[: len(head)] == head and p1[-len(tail) :] == tail
    block = p1[len(head) : -len(tail)]
    assert three.prefix_ids() == head + block * 3 + tail
    # Demonstrations interleave labels: dog, rain, dog, rain.
    assert block.count(b.answer("dog")[0]) >= 2
    no_ind = Classifier.from_files(llm, codec, demos, ClassifyOptions(method="icl", shots=2, induction=False))
    assert no_ind.prefix_ids() == block + tail


def test_icl_paper_scores_every_label_after_the_query(models, label_demos, queries) -> None:
    llm, codec = models
    demos = load_demo_folder(label_demos).pick(1)
    clf = Classifier.from_files(llm, codec, demos, ClassifyOptions(method="icl", mode="paper"))
    tokens = clf.clip_tokens(queries[0])
    raw = continuation_logprobs(clf.prefix, clf.query_ids(tokens), clf.candidates)
    got = clf.classify_tokens(tokens).probabilities
    assert [got["dog"], got["rain"]] == pytest.approx(torch.softmax(raw, 0).tolist(), abs=1e-5)


def _full_logprobs(llm: LoadedLLM, context: list[int], tokens: list[int]) -> torch.Tensor:
    """Per-token log-probabilities of ``tokens`` after ``context``, one uncached forward pass."""
    with torch.no_grad():
        logits = llm.model(input_ids=torch.tensor([context + tokens])).logits[0].float()
    logp = torch.log_softmax(logits[len(context) - 1 : -1], dim=-1)
    return logp[torch.arange(len(tokens)), torch.tensor(tokens)]


def test_icl_default_is_channel_scoring(models, label_demos, queries) -> None:
    llm, codec = models
    demos = load_demo_folder(label_demos).pick(2)
    clf = Classifier.from_files(llm, codec, demos, ClassifyOptions(method="icl", shots=2))
    b = clf.builder
    head = b.text("Input: <")
    assert head == b.head(b.template.query)
    # One prompt per label, holding only that label's demonstrations, ending where audio starts.
    dog = clf.prefix_ids(["dog"])
    assert clf.label_prefixes[0].prefix == dog + head
    t, block = b.template, b.text(b.template.block)
    shots = [block + b.render(t.demo, audio={"audio": clip}, answer="dog") for clip in clf._demo_tokens["dog"]]
    assert dog == b.bos() + b.induction(["dog", "rain"]) + shots[0] + shots[1] + block
    tokens = clf.clip_tokens(queries[0])
    base = _full_logprobs(llm, b.bos() + head, tokens)
    evidence = torch.stack(
        [(_full_logprobs(llm, clf.prefix_ids([lb]) + head, tokens) - base).clamp(min=0).sum() for lb in clf.labels]
    )
    got = clf.classify_tokens(tokens).probabilities
    want = torch.softmax(evidence / clf.opts.channel_temperature, 0)
    assert [got["dog"], got["rain"]] == pytest.approx(want.tolist(), abs=1e-4)
    with pytest.raises(UsageError, match="no audio tokens"):
        clf.classify_tokens([])


def test_classifier_needs_two_labels(models, label_demos) -> None:
    llm, codec = models
    with pytest.raises(UsageError, match="at least two labels"):
        Classifier.from_files(llm, codec, {"dog": [label_demos / "dog" / "0.wav"]}, ClassifyOptions(method="icl"))


# -- TTS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tts_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 0.96 s is a whole number of codec units, so decoded audio has exactly the demo duration.
    return write_label_demos(
        tmp_path_factory.mktemp("digits"), {"1": 250.0, "2": 700.0, "3": 1200.0}, clips=2, seconds=0.96
    )


def _assert_valid_layers(codec: Codec, tokens: list[list[int]], counts: list[int]) -> None:
    assert [len(layer) for layer in tokens] == counts
    assert set(tokens[0]) <= set(codec.bridge.valid_token_ids(0))
    assert not SPECIAL & set(flatten(tokens))
    codec.bridge.from_token_ids(tokens)  # raises on an id that is not a code of its layer


@pytest.mark.parametrize("mode", ["default", "paper"])
def test_synthesizer_modes(models, tts_demos, mode, monkeypatch) -> None:
    llm, codec = models
    folder = load_demo_folder(tts_demos)
    synth = Synthesizer.from_files(llm, codec, folder.clips, TTSOptions(mode=mode, shots=2))
    assert synth.counts == [8, 16, 32] and len(synth.demos) == 6
    assert len(Synthesizer.from_files(llm, codec, folder.clips, TTSOptions(mode=mode, shots=1)).demos) == 3
    speech = synth.speak("1+1")
    assert speech.sample_rate == SR
    assert speech.audio.shape == (int(0.96 * SR),) and np.isfinite(speech.audio).all()
    _assert_valid_layers(codec, speech.tokens, synth.counts)
    if mode == "default":
        assert speech.answer in ("1", "2", "3")
        path = speech.follows.split(" (")[0]
        assert Path(path) in folder.clips[speech.answer]
        assert speech.follows.endswith(f"({speech.answer!r})")
        demo = next(d for d in synth.demos if str(d.path) == path)
        assert speech.tokens == demo.tokens
        # The clip is its answer's least atypical codec copy.
        cands = [d for d in synth.demos if d.text == speech.answer]
        copies = [codec.decode(d.tokens)[: len(d.audio)] for d in cands]
        atypical = copy_atypicality([d.audio for d in cands], copies, SR)
        assert demo is cands[int(np.argmin(atypical))]
        # Without the clips' audio (demonstrations given as codes) the LLM's likelihood chooses.
        bare = Synthesizer(llm, codec, [TTSDemo(d.text, d.path, d.tokens) for d in synth.demos], synth.opts)
        query = bare.builder.render(bare.builder.template.query, text=speech.answer)
        cands = [d for d in bare.demos if d.text == speech.answer]
        scores = continuation_logprobs(bare.audio_prefix, query, [flatten(d.tokens) for d in cands])
        assert bare.clip_for(speech.answer) is cands[int(torch.argmax(scores))]
        audio_calls = []

        def counting(prefix, *rest):
            audio_calls.extend([prefix] if prefix is synth.audio_prefix else [])
            return continuation_logprobs(prefix, *rest)

        monkeypatch.setattr(tts_module, "continuation_logprobs", counting)
        assert synth.speak("1+1").follows == speech.follows and synth.clip_for(speech.answer) is demo
        assert not audio_calls
    else:
        assert speech.answer is None
        assert synth.speak("1+1").tokens == speech.tokens  # greedy is repeatable
    with pytest.raises(UsageError, match="empty text"):
        synth.speak("  ")


def test_default_tts_encodes_only_what_it_speaks(models, tts_demos, monkeypatch) -> None:
    llm, codec = models
    folder = load_demo_folder(tts_demos)
    encoded = []
    real_encode = codec.encode
    monkeypatch.setattr(codec, "encode", lambda wav: encoded.append(len(wav)) or real_encode(wav))
    synth = Synthesizer.from_files(llm, codec, folder.clips, TTSOptions(mode="default", shots=2))
    assert not encoded and "audio_prefix" not in vars(synth)  # reading the folder encodes nothing
    speech = synth.speak("1+1")
    assert len(encoded) == 2  # the answer's two clips, for the clip choice
    assert all(d.tokens is None for d in synth.demos if d.text != speech.answer)
    assert "audio_prefix" not in vars(synth)  # the audio prompt is never built
    synth.speak("1+1")
    assert len(encoded) == 2
    # The same clip and codes as with every demonstration encoded up front.
    eager = Synthesizer(
        llm, codec, [TTSDemo(d.text, d.path, real_encode(d.audio), d.audio) for d in synth.demos], synth.opts
    )
    again = eager.speak("1+1")
    assert again.follows == speech.follows and again.tokens == speech.tokens
    with pytest.raises(ValueError, match="tokens or its audio"):
        Synthesizer(llm, codec, [TTSDemo("1", Path("x.wav"), None)], synth.opts)


def test_copy_atypicality_singles_out_a_copy_bent_to_another_sound() -> None:
    t = np.arange(int(0.5 * SR)) / SR
    rng = np.random.default_rng(0)

    def chirp(f0: float, f1: float) -> np.ndarray:
        wav = np.sin(2 * np.pi * (f0 + (f1 - f0) * t / t[-1] / 2) * t) + 0.01 * rng.standard_normal(t.size)
        return wav.astype(np.float32)

    originals = [chirp(300, 900), chirp(310, 920), chirp(290, 880)]
    copies = [originals[0], chirp(900, 300), originals[2]]  # the second copy says something else
    scores = copy_atypicality(originals, copies, SR)
    assert int(np.argmax(scores)) == 1 and scores[1] > 2 * max(scores[0], scores[2])
    assert copy_atypicality(originals[:1], copies[:1], SR) == [0.0]
    with pytest.raises(ValueError):
        copy_atypicality(originals, copies[:2], SR)
    # Each copy is compared with the *other* originals only: its own original would favour it.
    from uniaudio_cli.features import dtw_cost
    from uniaudio_cli.tasks.tts import _mfcc

    fo, fc = [_mfcc(x, SR) for x in originals], [_mfcc(y, SR) for y in copies]
    own_left_out = np.mean([dtw_cost(fc[0], o) / (fc[0].shape[1] + o.shape[1]) for o in fo[1:]])
    assert scores[0] == pytest.approx(own_left_out)


# -- denoising -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs"))


def test_paper_tts_writes_the_commonest_length_and_names_the_demo_it_follows(models, tts_demos) -> None:
    llm, codec = models
    folder = load_demo_folder(tts_demos)
    synth = Synthesizer.from_files(llm, codec, folder.clips, TTSOptions(mode="paper", shots=2))
    demos = [TTSDemo(d.text, d.path, synth.tokens(d)) for d in synth.demos]
    short = [layer[: len(layer) // 2] for layer in demos[0].tokens]
    # One shorter clip among six: the output keeps the five's length; four of six: theirs.
    odd = [TTSDemo(demos[0].text, demos[0].path, short), *demos[1:]]
    assert Synthesizer(llm, codec, odd, synth.opts).counts == [8, 16, 32]
    most = [TTSDemo(d.text, d.path, short) for d in demos[:4]] + demos[4:]
    assert Synthesizer(llm, codec, most, synth.opts).counts == [4, 8, 16]
    # The demonstration sharing most layer-1 codes position by position, from half of them on.
    first = demos[0].tokens
    assert synth._closest_demo(first) == f"{demos[0].path} ('1')"
    others = {t for d in demos for t in d.tokens[0]}
    stranger = next(t for t in codec.bridge.valid_token_ids(0) if t not in others)
    half = [first[0][:4] + [stranger] * 4, *first[1:]]
    assert synth._closest_demo(half) == f"{demos[0].path} ('1')"
    assert synth._closest_demo([first[0][:3] + [stranger] * 5, *first[1:]]) is None


@pytest.mark.parametrize("mode", ["default", "paper"])
def test_denoiser_keeps_length(models, pair_demos, mode) -> None:
    llm, codec = models
    den = Denoiser.from_pairs(
        llm, codec, load_pair_folder(pair_demos), DenoiseOptions(mode=mode, pairs=3, segment_seconds=0.5)
    )
    assert isinstance(den, MaskDenoiser if mode == "default" else TokenDenoiser)
    rng = np.random.default_rng(1)
    for n in (int(0.3 * SR), 4 * UNIT, int(1.3 * SR) + 7):
        wav = (0.2 * rng.standard_normal(n)).astype(np.float32)
        out = den.denoise_wav(wav)
        assert out.shape == (n,) and out.dtype == np.float32 and np.isfinite(out).all()
    noisy_file = pair_demos / "u1" / "noisy0.wav"
    assert den.denoise(noisy_file).shape == (sf.info(noisy_file).frames,)


def test_paper_denoiser_writes_layer_counts(models, pair_demos) -> None:
    llm, codec = models
    den = Denoiser.from_pairs(
        llm, codec, load_pair_folder(pair_demos), DenoiseOptions(mode="paper", pairs=3, segment_seconds=0.5)
    )
    assert isinstance(den, TokenDenoiser) and len(den.demos) == 3
    with pytest.raises(UsageError, match="no audio to denoise"):
        list(den.denoise_blocks([np.zeros(0, dtype=np.float32)]))
    seg = 4 * UNIT  # 0.5 s rounds down to whole codec units
    rng = np.random.default_rng(1)
    for n in (int(0.3 * SR), seg, int(1.3 * SR) + 7):
        wav = (0.2 * rng.standard_normal(n)).astype(np.float32)
        den.denoise_wav(wav)
        tokens = den.last_tokens
        # Checking guessed tokens in blocks writes what one pass per token writes.
        den.opts.draft_block = 1
        den.denoise_wav(wav)
        assert den.last_tokens == tokens
        den.opts.draft_block = DenoiseOptions.draft_block
        # The clip is encoded whole and its codes cut into segments: the last segment's codes
        # are the tail of the whole clip's, as many as encoding the last piece alone gives.
        start = (n - 1) // seg * seg
        first = start // codec.model.cfg.hop_length
        strides = codec.model.cfg.vq_strides
        noisy = [layer[first // s :] for layer, s in zip(codec.encode(wav), strides, strict=True)]
        assert [len(layer) for layer in noisy] == [len(layer) for layer in codec.encode(wav[start:])]
        _assert_valid_layers(codec, tokens, [len(layer) for layer in noisy])


def _snr(clean: np.ndarray, x: np.ndarray) -> float:
    return 10 * float(np.log10(np.sum(clean**2) / np.sum((x - clean) ** 2)))


def _bursts(freq: float, period: float, seconds: float = 1.0) -> np.ndarray:
    """A tone switched on and off every ``period`` seconds: it stands out of a noise floor the
    way syllables do (the mask is looked up by the level above the clip's noise floor)."""
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t) * (np.floor(t / period) % 2 == 0)).astype(np.float32)


def test_mask_denoiser_learns_the_mask_from_pairs(models, tmp_path: Path) -> None:
    llm, codec = models
    rng = np.random.default_rng(0)
    for name, freq, period in (("a", 400.0, 0.2), ("b", 900.0, 0.3)):
        clean = _bursts(freq, period)
        (tmp_path / name).mkdir()
        sf.write(tmp_path / name / "clean.wav", clean, SR)
        sf.write(tmp_path / name / "noisy0.wav", clean + 0.1 * rng.standard_normal(len(clean)).astype(np.float32), SR)
    pairs = load_pair_folder(tmp_path)
    den = Denoiser.from_pairs(llm, codec, pairs, DenoiseOptions())
    assert isinstance(den, MaskDenoiser) and den.estimator.num_frames > 0
    clean = _bursts(400.0, 0.25)
    noisy = clean + 0.1 * np.random.default_rng(7).standard_normal(len(clean)).astype(np.float32)
    gains = den.estimator.gains(noisy)
    s = MaskSettings()
    assert gains.min() >= s.floor**s.power - 1e-6 and gains.max() <= 1 + 1e-6
    # Noise alone is turned down, the tone kept: about 3.6 dB SNR in, 17 dB out.
    assert _snr(clean, den.denoise_wav(noisy)) > _snr(clean, noisy) + 10
    # With the floor at 1 every gain is 1 and the STFT round trip gives the input back.
    keep = Denoiser.from_pairs(llm, codec, pairs, DenoiseOptions(mask=MaskSettings(floor=1.0)))
    np.testing.assert_allclose(keep.denoise_wav(noisy), noisy, atol=1e-4)
    # Windows stream with every sample kept, also at exactly one and two windows' length.
    est = den.estimator
    win = int(est.settings.window_seconds * SR)
    for n in (win, 2 * win - int(est.settings.overlap_seconds * SR), win + 1):
        x = np.resize(noisy, n)
        assert sum(len(b) for b in est.clean_blocks([x[: n // 3], x[n // 3 :]])) == n
    with pytest.raises(UsageError, match="no audio to denoise"):
        list(est.clean_blocks([np.zeros(0, dtype=np.float32)]))
    # More neighbours than demonstration frames: all frames are used.
    many = Denoiser.from_pairs(llm, codec, pairs, DenoiseOptions(mask=MaskSettings(neighbours=10**6)))
    assert many.estimator.gains(noisy).shape == gains.shape


def test_mask_denoiser_refuses_pairs_of_unequal_length(models, pair_demos, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "pairs"
    shutil.copytree(pair_demos, root)
    wav, _ = sf.read(root / "u2" / "noisy0.wav", dtype="float32")
    sf.write(root / "u2" / "noisy0.wav", wav[:-100], SR)
    llm, codec = models
    with pytest.raises(UsageError, match=r"noisy0\.wav.*same length"):
        Denoiser.from_pairs(llm, codec, load_pair_folder(root), DenoiseOptions())
    # Longer than its clean file is refused as well.
    sf.write(root / "u2" / "noisy0.wav", np.concatenate([wav, wav[:100]]), SR)
    with pytest.raises(UsageError, match=r"noisy0\.wav.*same length"):
        Denoiser.from_pairs(llm, codec, load_pair_folder(root), DenoiseOptions())


def test_pair_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such demonstration folder") as e:
        load_pair_folder(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)
    write_tone(tmp_path / "p" / "u1" / "clean.wav")
    with pytest.raises(UsageError, match=r"needs clean\.<ext> and noisy") as e:
        load_pair_folder(tmp_path / "p")
    assert str(tmp_path / "p" / "u1") in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no \\(noisy, clean\\) pairs"):
        load_pair_folder(tmp_path / "empty")


# -- demonstration folders and cropping ------------------------------------------------------


def test_demo_folder_errors_name_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(UsageError, match="no such demonstration folder") as e:
        load_demo_folder(missing)
    assert str(missing) in str(e.value)
    one = write_label_demos(tmp_path / "one", {"dog": 300.0})
    with pytest.raises(UsageError, match="1 label folder\\(s\\), at least 2 needed") as e:
        load_demo_folder(one)
    assert str(one) in str(e.value)
    (one / "rain").mkdir()
    (one / "rain" / "notes.txt").write_text("not audio")
    with pytest.raises(UsageError, match="label folder holds no audio files") as e:
        load_demo_folder(one)
    assert str(one / "rain") in str(e.value)
    file = write_tone(tmp_path / "a.wav")
    with pytest.raises(UsageError, match="not a folder"):
        load_demo_folder(file)


def test_demo_folder_pick(tmp_path: Path) -> None:
    root = write_label_demos(tmp_path / "d", clips=3)
    write_tone(root / "rain" / "sub" / "deep.wav")  # clips are found recursively
    (root / ".hidden").mkdir()
    (root / "dog" / ".0.wav").write_bytes(b"")  # dot files are ignored
    folder = load_demo_folder(root)
    assert folder.labels == ["dog", "rain"]
    assert len(folder.clips["dog"]) == 3 and len(folder.clips["rain"]) == 4
    assert folder.pick(2, seed=None) == {lb: folder.clips[lb][:2] for lb in folder.labels}
    drawn = folder.pick(2, seed=5)
    assert drawn == folder.pick(2, seed=5)
    # The seed chooses the draw: over a few seeds, more than one draw comes up.
    assert len({tuple(map(tuple, folder.pick(2, seed=k).values())) for k in range(8)}) > 1
    assert all(len(v) == 2 and set(v) <= set(folder.clips[k]) for k, v in drawn.items())
    with pytest.raises(UsageError, match="--shots 4 needs 4 per label") as e:
        folder.pick(4)
    assert str(root / "dog") in str(e.value)


def test_crop_or_pad() -> None:
    wav = np.full(1000, 0.01, dtype=np.float32)
    wav[700:800] = 1.0
    assert np.array_equal(crop_or_pad(wav, 200, "start"), wav[:200])
    loud = crop_or_pad(wav, 200, "loudest")
    assert loud.shape == (200,) and np.count_nonzero(loud == 1.0) == 100
    short = crop_or_pad(wav[:50], 200, "loudest")
    assert short.shape == (200,) and np.array_equal(short[:50], wav[:50]) and not short[50:].any()
    assert np.array_equal(crop_or_pad(wav, 1000, "loudest"), wav)


def test_fused_method_joins_llm_states_and_acoustic_statistics(models, label_demos, queries) -> None:
    from uniaudio_cli.tasks.prototype import acoustic_statistics, clip_features, fused_feature

    llm, codec = models
    demos = load_demo_folder(label_demos).pick(None)
    opts = ClassifyOptions()  # the default method
    assert opts.method == "fused" and opts.token_layers == "all"
    assert opts.softmax_temperature == pytest.approx(FITTED_TEMPERATURE["fused"])
    clf = Classifier.from_files(llm, codec, demos, opts)
    pred = clf.classify(queries[0])
    assert pred.label in demos and sum(pred.probabilities.values()) == pytest.approx(1.0)

    # A label's score is the cosine between the query's fused feature and its nearest demonstration's.
    def feature(wav: np.ndarray) -> torch.Tensor:
        tokens = [t for layer in codec.encode(wav) for t in layer]
        states = clip_features(llm, tokens, pooling="meanstd")
        return fused_feature(states, acoustic_statistics(wav, codec.sample_rate), None)

    q = feature(clf.load_clip(queries[0]))
    nearest = [max(float(feature(clf.load_clip(p)) @ q) for p in demos[lb]) for lb in clf.labels]
    expected = torch.softmax(torch.tensor(nearest) / opts.softmax_temperature, dim=0)
    assert [pred.probabilities[lb] for lb in clf.labels] == pytest.approx(expected.tolist(), abs=1e-5)
    assert clf.classify_many([queries[0]])[0].probabilities == pred.probabilities

    # Tokens alone are not enough for fused, and the demonstrations' acoustic statistics are required.
    tokens = [t for layer in codec.encode(clf.load_clip(queries[0])) for t in layer]
    with pytest.raises(UsageError, match="needs each query's audio"):
        clf.classify_tokens(tokens)
    with pytest.raises(UsageError, match="acoustic statistics"):
        Classifier(llm, codec, clf._demo_tokens, opts)


def test_fused_scores_a_label_by_its_nearest_demonstration(models) -> None:
    """A query equal to one of a label's clips goes to that label, however far its other clips are."""
    llm, codec = models
    rng = np.random.default_rng(0)
    tone = np.sin(2 * np.pi * 220 * np.arange(16000) / 16000).astype(np.float32) * 0.3
    noise = [(rng.standard_normal(16000) * s).astype(np.float32) for s in (0.05, 0.3, 0.6)]
    wavs = {"a": [tone, noise[0]], "b": [noise[1], noise[2]]}
    tokens = {lb: [[t for layer in codec.encode(w) for t in layer] for w in ws] for lb, ws in wavs.items()}
    acoustic = {lb: [acoustic_statistics(w, 16000) for w in ws] for lb, ws in wavs.items()}
    clf = Classifier(llm, codec, tokens, ClassifyOptions(center=False), demo_acoustic=acoustic)
    pred = clf.classify_tokens(tokens["a"][0], "tone", acoustic["a"][0])
    assert pred.label == "a" and pred.probabilities["a"] > 0.5
    sims = [f @ f[0] for f in clf.demo_features]
    assert float(sims[0][0]) == pytest.approx(1.0, abs=1e-5)


def test_a_query_past_the_context_is_named(models, label_demos, tmp_path: Path) -> None:
    """A query too long for the LLM names its file and a fix that works for every method."""
    llm, codec = models
    demos = load_demo_folder(label_demos).pick(None)
    too_long = [5] * (llm.context_length + 1)  # fails before the model runs, so any id
    for method in ("prototype", "fused"):
        clf = Classifier.from_files(llm, codec, demos, ClassifyOptions(method=method, center=False))
        acoustic = np.zeros(1, dtype=np.float32) if method == "fused" else None
        with pytest.raises(UsageError, match=r"^long\.wav: a clip of .*--crop SECONDS"):
            clf.classify_tokens(too_long, "long.wav", acoustic)
    clf = Classifier.from_files(llm, codec, demos, ClassifyOptions(method="prototype", center=False))
    with pytest.raises(UsageError, match=r"^b\.wav: a clip of"):
        clf.classify_tokens_many([[5] * 4, too_long], ["a.wav", "b.wav"])
    # A whole file is refused from its header, before the codec encodes it.
    long = write_tone(tmp_path / "long.wav", 40.0)  # about 2,300 tokens of three layers
    for method in ("prototype", "fused"):
        clf = Classifier.from_files(llm, codec, demos, ClassifyOptions(method=method, layers="all", center=False))
        with pytest.raises(AudioError, match=r"long\.wav: 40 s is about 2333 tokens, more than .* \(about 35 s\)"):
            clf.classify(long)


@pytest.mark.parametrize(("mode", "batch"), [("default", True), ("default", False), ("paper", False)])
def test_a_pass_stopped_partway_leaves_the_classifier_usable(models, label_demos, queries, mode, batch) -> None:
    """Ctrl-C or an out-of-memory error inside the LLM leaves some layers' caches longer than
    others; the next query must still start from the intact prompt."""
    llm, codec = models
    demos = load_demo_folder(label_demos).pick(1)
    opts = ClassifyOptions(method="icl", mode=mode)
    clf = Classifier.from_files(llm, codec, demos, opts, batch=batch)
    want = clf.classify(queries[0]).probabilities

    def stop(*_args: object) -> None:
        raise KeyboardInterrupt

    hook = llm.model.model.layers[0].register_forward_hook(stop)  # layer 1 never runs
    try:
        with pytest.raises(KeyboardInterrupt):
            clf.classify(queries[1])
    finally:
        hook.remove()
    got = clf.classify(queries[0]).probabilities
    assert got == pytest.approx(want, abs=1e-5)


def test_hidden_states_do_not_depend_on_what_ran_before(tmp_path: Path) -> None:
    """A prototype at a shallow depth runs a shortened layer list; a later full-depth pass must
    still record every state (transformers' own recorders are set on the first pass's layers)."""
    llm, _ = tiny_models(tmp_path)
    tokens = [5, 6, 7, 8, 9, 10]
    shallow = clip_features(llm, tokens, upto=0)
    assert torch.isnan(shallow[1:]).all()
    full = clip_features(llm, tokens)
    assert not torch.isnan(full).any()
    lead = len(bos_ids(llm.tokenizer) + list(llm.tokenizer.encode("Input: <", add_special_tokens=False)))
    fresh, _ = tiny_models(tmp_path / "fresh")
    ids = bos_ids(fresh.tokenizer) + list(fresh.tokenizer.encode("Input: <", add_special_tokens=False)) + tokens
    with torch.no_grad():
        states = fresh.model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False).hidden_states
    want = torch.stack([h[0, lead:].float().mean(0) for h in states])
    torch.testing.assert_close(full, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(shallow[0], want[0], atol=1e-6, rtol=0)


def test_abstain_flags_unsure_answers(models, label_demos, queries) -> None:
    llm, codec = models
    demos = load_demo_folder(label_demos).pick(None)
    sure = Classifier.from_files(llm, codec, demos, ClassifyOptions(method="prototype", abstain=0.01))
    unsure = Classifier.from_files(llm, codec, demos, ClassifyOptions(method="prototype", abstain=0.999999))
    a, b = sure.classify(queries[0]), unsure.classify(queries[0])
    assert not a.abstained and b.abstained and a.label == b.label
    assert any(w.startswith("unsure: ") for w in b.warnings)
    for bad in (1.5, 1.0, 0.0):  # 1.0 would abstain on every query short of certainty
        with pytest.raises(UsageError, match="--abstain"):
            ClassifyOptions(abstain=bad)


def test_mask_lookup_weighs_the_nearest_frames_and_windows_fade_forward(models) -> None:
    from uniaudio_cli.tasks.denoise_mask import MaskEstimator

    llm, codec = models
    rng = np.random.default_rng(3)
    pairs = []
    for freq, period in ((400.0, 0.2), (900.0, 0.3)):
        clean = _bursts(freq, period)
        pairs.append((clean + 0.1 * rng.standard_normal(len(clean)).astype(np.float32), clean))
    with pytest.raises(UsageError, match="a demonstration pair has 15900 noisy and 16000 clean samples"):
        MaskEstimator(llm, codec, [(pairs[0][0][:-100], pairs[0][1])])
    # Almost no softening: each frame takes the mask of its most similar demonstration frame.
    sharp = MaskSettings(temperature=1e-4, floor=0.0, power=1.0, neighbours=10**6)
    est = MaskEstimator(llm, codec, pairs, sharp)
    noisy = _bursts(400.0, 0.25) + 0.1 * rng.standard_normal(SR).astype(np.float32)
    nearest = est.values[np.argmax(est._key(*est._describe(noisy)) @ est.keys.T, axis=1)]
    close = np.abs(est.gains(noisy) - nearest).max(axis=1) < 1e-3
    assert close.mean() > 0.9  # a few frames have a near tie between two demonstration frames
    # Windows are cross-faded from the earlier window into the later one.
    calls = iter(range(1, 100))
    est.clean = lambda x: np.full(len(x), float(next(calls)), dtype=np.float32)
    win, ov = int(est.settings.window_seconds * SR), int(est.settings.overlap_seconds * SR)
    out = np.concatenate(list(est.clean_blocks([np.zeros(2 * win - ov, dtype=np.float32)])))
    seam = out[win - ov : win]
    assert out[0] == 1.0 and out[-1] == 2.0 and np.all(np.diff(seam) > 0) and 1.0 < seam[0] < seam[-1] < 2.0
