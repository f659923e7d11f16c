"""The Python API: load the models once, then classify, speak, denoise, encode and decode.

::

    import uniaudio_cli as ua

    models = ua.load_models()                      # default LLM + codec, CUDA when present
    preds = ua.classify(models, "demos/", ["dog.wav", "rain.wav"])
    print(preds[0].label, preds[0].probabilities)
    speech = ua.speak(models, ["1+1"])[0]          # speech.audio: (T,) float32 at speech.sample_rate
    clean = ua.denoise(models, ["noisy.wav"])[0]   # (T,) float32
    sound = ua.generate(models, ["dog bark"], "demos/")[0]  # demos/<caption>/<clips>; sound.audio: (T,)
    clip = ua.encode(models, "clip.wav")           # EncodedClip: codes per layer, LLM token ids
    wav = ua.decode(models, clip)

Every function takes the :class:`Models` of :func:`load_models`; the task objects
(:class:`~uniaudio_cli.tasks.classify.Classifier`, :class:`~uniaudio_cli.tasks.tts.Synthesizer`,
:class:`~uniaudio_cli.tasks.denoise.Denoiser`, :class:`~uniaudio_cli.tasks.generate.SoundGenerator`)
can also be built from already-encoded demonstrations, reading no audio (only package data, the
prototype centre beside the codec, and the prompt cache unless it is off). The CLI and ``bench/`` use only this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from uniaudio_cli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

    from uniaudio_cli.codec.api import Codec
    from uniaudio_cli.codec.io import EncodedClip
    from uniaudio_cli.llm import LoadedLLM
    from uniaudio_cli.tasks.classify import Classifier, Prediction
    from uniaudio_cli.tasks.demos import DemoFolder
    from uniaudio_cli.tasks.denoise import Denoiser
    from uniaudio_cli.tasks.generate import Sound, SoundGenerator
    from uniaudio_cli.tasks.tts import Speech, Synthesizer

PathLike = str | Path


class Models(NamedTuple):
    """The frozen LLM and the codec built on its vocabulary (unpacks as ``llm, codec``)."""

    llm: LoadedLLM
    codec: Codec


def load_models(
    llm: str | None = None,
    codec: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    prompt_cache: bool = True,
) -> Models:
    """Load the frozen LLM and the codec on its vocabulary; a mismatched codec is refused.

    Args:
        llm: Hugging Face id (local cache only), a folder or a ``.gguf`` file; ``None``: the
            embedded SmolLM2-135M-Instruct.
        codec: a checkpoint folder or the published ``.pth``; ``None``: the shipped default.
        device: ``cpu``, ``cuda``, ``cuda:N``; ``None``: CUDA when present.
        dtype: ``float32``, ``bfloat16``, ``float16``; ``None``: bfloat16 on GPU, float32 on CPU.
        prompt_cache: keep the tasks' prompt KV caches under ``$UNIAUDIO_HOME/prompt-cache``
            across runs (results are unchanged; ``UNIAUDIO_PROMPT_CACHE=0`` turns it off too).
    """
    import torch

    from uniaudio_cli.codec.api import load_codec
    from uniaudio_cli.errors import CheckpointError
    from uniaudio_cli.llm import load_llm, load_vocabulary
    from uniaudio_cli.runtime import resolve_device

    dev = resolve_device(device)
    # Building the models draws random initial weights before the checkpoints replace them; a
    # caller's seeded random stream must not depend on whether models were loaded.
    with torch.random.fork_rng(devices=[]):
        # The codec first, on the LLM's vocabulary (its tokenizer and embedding table, read
        # without the model): a mismatched pair is refused before the LLM's weights load,
        # which for a 7B model takes minutes.
        vocab = load_vocabulary(llm, convert_model=True)
        # On CUDA the codec goes where the LLM's first layers will (device_map "auto" fills the
        # visible GPUs from index 0); a fallback to the CPU is resolved, and warned of, once.
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", 0)
        cdc = load_codec(codec, vocabulary=vocab, device=dev)
        if cdc.bridge.word_list_layer1:
            raise CheckpointError(
                f"{cdc.source}: layer 1 of this checkpoint indexes its own "
                f"{cdc.bridge.codebook_sizes[0]}-word list (layer1.npy of the reference release), whose "
                "words the LLM reads as one or more tokens each; uniaudio's tasks read layer-1 codes as "
                "the LLM's token ids, so they would read the wrong words",
                "use the published checkpoint whose layer 1 is the full LLaMA table (32,000 codes), or "
                "the default codec; encode, decode and eval codec work with this one",
            )
        llm_device = "cpu" if dev.type == "cpu" else device
        model = load_llm(llm, device=llm_device, dtype=dtype, prompt_cache=prompt_cache, vocabulary=vocab)
        return Models(model, cdc)


def _items(value: object, what: str) -> list[Any]:
    """A list of ``what`` items: one text or path alone is one item (``speak(models, "1+1")``
    speaks one text, not three characters)."""
    if isinstance(value, str | Path):
        return [value]
    if isinstance(value, Mapping) or not isinstance(value, Sequence | Iterable):
        raise UsageError(f"{what}: {type(value).__name__} given", f"pass a list of {what}")
    return list(value)


def _options(cls: type, options: Mapping[str, Any]) -> Any:
    """``cls(**options)``, an unknown field named with the ones there are (not a TypeError)."""
    import dataclasses

    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in options if k not in fields]
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r} for {cls.__name__}", f"use one of {', '.join(fields)}")
    return cls(**options)


def _demo_folder(demos: PathLike | Mapping[str, Sequence[PathLike]]) -> DemoFolder:
    from uniaudio_cli.tasks.demos import DemoFolder, load_demo_folder

    if isinstance(demos, str | Path):
        return load_demo_folder(demos)
    return DemoFolder(Path("<demos>"), {label: [Path(p) for p in paths] for label, paths in demos.items()})


def classifier(
    models: Models,
    demos: PathLike | Mapping[str, Sequence[PathLike]],
    shots: int | None = None,
    seed: int = 0,
    **options: Any,
) -> Classifier:
    """A classifier on ``demos``: a folder ``DIR/<label>/<clips>`` or ``{label: [paths]}``.

    ``shots`` limits the clips per label (a seeded draw); ``None`` uses every clip. ``options``
    are :class:`~uniaudio_cli.tasks.classify.ClassifyOptions` fields (``method``, ``mode``, ...).
    """
    from uniaudio_cli.tasks.classify import Classifier, ClassifyOptions

    folder = _demo_folder(demos)
    clips = folder.clips if shots is None else folder.pick(shots, seed)
    return Classifier.from_files(models.llm, models.codec, clips, _options(ClassifyOptions, options))


def classify(
    models: Models,
    demos: PathLike | Mapping[str, Sequence[PathLike]],
    queries: Sequence[PathLike],
    shots: int | None = None,
    seed: int = 0,
    **options: Any,
) -> list[Prediction]:
    """Label each query file (one path alone is one query) from the demonstrations (see
    :func:`classifier`)."""
    clf = classifier(models, demos, shots, seed, **options)
    return [clf.classify(q) for q in _items(queries, "query paths")]


def speaker(models: Models, demos: PathLike | None = None, **options: Any) -> Synthesizer:
    """A text-to-speech synthesiser on ``DIR/<text>/<clips>`` (default: the shipped spoken digits).

    ``options`` are :class:`~uniaudio_cli.tasks.tts.TTSOptions` fields (``mode``, ``shots``, ...).
    """
    from uniaudio_cli.tasks import options as task_options
    from uniaudio_cli.tasks.demos import load_demo_folder
    from uniaudio_cli.tasks.tts import Synthesizer, TTSOptions

    folder = load_demo_folder(demos or task_options.default_tts_demos())
    return Synthesizer.from_files(models.llm, models.codec, folder.clips, _options(TTSOptions, options))


def speak(models: Models, texts: Sequence[str], demos: PathLike | None = None, **options: Any) -> list[Speech]:
    """Speak the answer to each text (e.g. ``["1+1", "2+2"]``; one string alone is one text);
    see :func:`speaker`."""
    synth = speaker(models, demos, **options)
    return [synth.speak(t) for t in _items(texts, "texts")]


def denoiser(models: Models, demos: PathLike | None = None, **options: Any) -> Denoiser:
    """A denoiser on ``DIR/<name>/clean.wav + noisy*.wav`` pairs (default: the shipped pairs).

    ``options`` are :class:`~uniaudio_cli.tasks.denoise.DenoiseOptions` fields.
    """
    from uniaudio_cli.tasks import options as task_options
    from uniaudio_cli.tasks.denoise import DenoiseOptions, Denoiser, load_pair_folder

    pairs = load_pair_folder(demos or task_options.default_denoise_demos())
    return Denoiser.from_pairs(models.llm, models.codec, pairs, _options(DenoiseOptions, options))


def denoise(
    models: Models, inputs: Sequence[PathLike], demos: PathLike | None = None, **options: Any
) -> list[np.ndarray]:
    """Clean each noisy file (one path alone is one input); returns ``(T,)`` float32 arrays at
    the codec's rate (see :func:`denoiser`)."""
    den = denoiser(models, demos, **options)
    return [den.denoise(p) for p in _items(inputs, "input paths")]


def generator(models: Models, demos: PathLike | Mapping[str, Sequence[PathLike]], **options: Any) -> SoundGenerator:
    """A text-to-sound generator on ``DIR/<caption>/<clips>`` or ``{caption: [paths]}`` (``_`` in
    a caption reads as a space: folder ``dog_bark`` is caption ``dog bark``).

    ``options`` are :class:`~uniaudio_cli.tasks.generate.GenerateOptions` fields (``seconds``,
    ``shots``, ``crop``, ``temperature``, ``top_k``, ``seed``, ...).
    """
    from uniaudio_cli.tasks.generate import GenerateOptions, SoundGenerator

    return SoundGenerator.from_files(models.llm, models.codec, demos, _options(GenerateOptions, options))


def generate(
    models: Models,
    captions: Sequence[str],
    demos: PathLike | Mapping[str, Sequence[PathLike]],
    **options: Any,
) -> list[Sound]:
    """A clip for each caption (``Sound.audio``: ``(T,)`` float32 at ``Sound.sample_rate``); see
    :func:`generator`. With a small LLM the clips mostly recombine the demonstrations."""
    gen = generator(models, demos, **options)
    return [gen.generate(c) for c in _items(captions, "captions")]


def _codec(models: Models | Codec) -> Codec:
    return models.codec if isinstance(models, Models) else models


def encode(models: Models | Codec, path: PathLike, max_seconds: float | None = None) -> EncodedClip:
    """Encode one audio file into the codec's codes (LLM token ids per layer)."""
    if not isinstance(path, str | Path):
        raise UsageError(f"encode takes one path, not {type(path).__name__}", "call encode once per file")
    return _codec(models).encode_file(path, max_seconds)


def decode(models: Models | Codec, clip: EncodedClip) -> np.ndarray:
    """Decode codes from :func:`encode` (or a codes JSON read with ``codec.io``) to ``(T,)`` audio."""
    from uniaudio_cli.codec.io import EncodedClip

    if not isinstance(clip, EncodedClip):
        raise UsageError(
            f"decode takes an EncodedClip, not {type(clip).__name__}",
            "pass what encode() returns, or read a codes JSON with uniaudio_cli.codec.io.read_encoded(p)[0]",
        )
    return _codec(models).decode_clip(clip)
