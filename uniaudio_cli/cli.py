"""The ``uniaudio`` command line: a thin layer over the library.

Heavy modules (torch, transformers) are imported inside the commands so ``--help`` is instant.
Every :class:`UniaudioError` becomes one line on stderr with its fix and a non-zero exit code;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from uniaudio_cli.errors import UniaudioError, UsageError

app = typer.Typer(
    name="uniaudio",
    help="Few-shot audio tasks on frozen LLMs through the LLM-Codec (UniAudio 1.5).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
eval_app = typer.Typer(help="Measure the codec and the tasks.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

_state: dict[str, bool] = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])

CodecOpt = Annotated[
    str | None,
    typer.Option("--codec", help="Codec checkpoint folder or published .pth [default: shipped checkpoint]"),
]
LlmOpt = Annotated[
    str | None,
    typer.Option("--llm", help="LLM whose vocabulary the codec uses: HF id, folder or .gguf [default: embedded]"),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N [default: cuda if present]")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summaries on stderr.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]


def _fail(message: str, code: int) -> None:
    from uniaudio_cli.batch import stderr

    stderr.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn library errors into one line and an exit code (traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UniaudioError as e:
            if _state["debug"]:
                raise
            _fail(e.one_line(), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            if _state["debug"]:
                raise
            _fail("out of memory", 1)

    return wrapper  # type: ignore[return-value]


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr
    )
    if not debug:
        import os
        import warnings

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # transformers' own tqdm bars (GGUF conversion, weight loading); set through its env
        # switch so that transformers need not be imported for --help.
        os.environ.setdefault("TQDM_DISABLE", "1")
        warnings.filterwarnings("ignore")


def _check_outputs(n_inputs: int, output: Path | None, out_dir: Path | None) -> None:
    if output is not None and out_dir is not None:
        raise UsageError("-o and --out-dir both given", "use -o for one input, --out-dir for many")
    if output is not None and n_inputs != 1:
        raise UsageError(f"-o takes one input, {n_inputs} given", "use --out-dir DIR for several inputs")


@app.command()
@handle_errors
def encode(
    inputs: Annotated[list[str], typer.Argument(help="Audio files or folders; - reads paths from stdin.")],
    codec: CodecOpt = None,
    llm: LlmOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per input on stdout.")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Write <stem>.json per input here.")] = None,
    max_seconds: Annotated[float, typer.Option("--max-seconds", help="Refuse longer inputs.")] = 600.0,
    device: DeviceOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Encode audio into LLM tokens: text (one line per layer), --json, or --out-dir files."""
    from uniaudio_cli.audio import expand_inputs, output_path_for, write_text_atomic
    from uniaudio_cli.batch import run_batch
    from uniaudio_cli.codec.api import load_codec

    paths = expand_inputs(inputs)
    model = load_codec(codec, llm=llm, device=device)
    multi = len(paths) > 1

    def emit(path: Path, clip: Any) -> None:
        if out_dir is not None:
            write_text_atomic(output_path_for(path, out_dir, ".json"), clip.to_json() + "\n", force=force)
        elif as_json:
            typer.echo(clip.to_json())
        else:
            if multi:
                typer.echo(f"==> {path} <==")
            for layer, line in enumerate(model.token_text(clip.codes), 1):
                typer.echo(f"L{layer}: {line}")

    report = run_batch(paths, lambda p: model.encode_file(p, max_seconds), emit, quiet, "encoding")
    raise typer.Exit(report.exit_code)


@app.command()
@handle_errors
def decode(
    inputs: Annotated[list[str], typer.Argument(help="Codes JSON files from `encode --json`; - reads paths.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output WAV (one input).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Write <stem>.wav per input here.")] = None,
    codec: CodecOpt = None,
    llm: LlmOpt = None,
    device: DeviceOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode LLM tokens (from `encode --json`) back to 16 kHz WAV."""
    from uniaudio_cli.audio import expand_inputs, output_path_for, write_audio
    from uniaudio_cli.batch import run_batch
    from uniaudio_cli.codec.api import load_codec
    from uniaudio_cli.codec.io import read_encoded

    if output is None and out_dir is None:
        raise UsageError("no output given", "pass -o OUT.wav or --out-dir DIR")
    paths = expand_inputs(inputs, suffixes={".json", ".jsonl"})
    _check_outputs(len(paths), output, out_dir)
    if output is not None and output.exists() and not force:
        raise UsageError(f"{output}: exists", "pass --force to overwrite, or choose another output")
    model = load_codec(codec, llm=llm, device=device)

    def run(path: Path) -> list[Any]:
        clips = read_encoded(path)
        if len(clips) > 1 and output is not None:
            raise UsageError(f"{path}: holds {len(clips)} clips", "use --out-dir to write one WAV per clip")
        return [model.decode_clip(c, str(path)) for c in clips]

    def emit(path: Path, wavs: list[Any]) -> None:
        for i, wav in enumerate(wavs):
            if output is not None:
                dest = output
            else:
                assert out_dir is not None
                suffix = ".wav" if len(wavs) == 1 else f"_{i:03d}.wav"
                dest = output_path_for(path, out_dir, suffix)
            write_audio(dest, wav, model.sample_rate, force=force)

    report = run_batch(paths, run, emit, quiet, "decoding")
    raise typer.Exit(report.exit_code)


DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="float32, bfloat16, float16 [default: bf16 on GPU]")]
ModeOpt = Annotated[
    str,
    typer.Option("--mode", help="default (works with small LLMs) or paper (the paper's exact protocol)."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (demonstration draws, sampling).")]
# Options shared by `classify` and `eval classify`.
MethodOpt = Annotated[str, typer.Option("--method", help="icl (in-context prompt) or prototype.")]
RepeatsOpt = Annotated[int, typer.Option("--repeats", min=1, help="Copies of the demonstration block.")]
LayersOpt = Annotated[str, typer.Option("--layers", help="semantic (layer 1) or all (layers 1-3).")]
NoInductionOpt = Annotated[bool, typer.Option("--no-induction", help="Leave out the instruction line.")]
NoCenterOpt = Annotated[
    bool, typer.Option("--no-center", help="prototype: do not subtract the codec's base-set centre.")
]
CropOpt = Annotated[
    float | None,
    typer.Option("--crop", help="Crop/pad clips to SECONDS, 0: whole [default: 1 for icl --mode paper, else 0]"),
]


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UsageError(f"{name} {value!r} is not one of {', '.join(allowed)}", f"use {name} {allowed[0]}")
    return value


def load_models(llm: str | None, codec: str | None, device: str | None, dtype: str | None) -> tuple[Any, Any]:
    """The frozen LLM and the codec built on its vocabulary (a mismatched codec is refused)."""
    from uniaudio_cli.codec.api import load_codec
    from uniaudio_cli.llm import load_llm

    model = load_llm(llm, device=device, dtype=dtype)
    return model, load_codec(codec, vocabulary=model.vocabulary, device=str(model.device))


def _slug(text: str) -> str:
    import re

    slug = re.sub(r"[^A-Za-z0-9+\-]+", "_", text.strip()).strip("_")
    return (slug or "tts")[:60]


@app.command()
@handle_errors
def classify(
    queries: Annotated[list[str], typer.Argument(help="Audio files or folders to label; - reads paths from stdin.")],
    demos: Annotated[Path, typer.Option("--demos", help="Demonstrations: DIR/<label>/<clips>.")],
    method: MethodOpt = "icl",
    mode: ModeOpt = "default",
    shots: Annotated[int, typer.Option("--shots", min=1, help="Demonstration clips per label.")] = 1,
    repeats: RepeatsOpt = 1,
    layers: LayersOpt = "semantic",
    no_induction: NoInductionOpt = False,
    no_center: NoCenterOpt = False,
    crop: CropOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines with every label's probability.")] = False,
    seed: SeedOpt = 0,
    llm: LlmOpt = None,
    codec: CodecOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Label audio from a few demonstrations per label: prints path, label, probability."""
    import json

    from uniaudio_cli.audio import expand_inputs
    from uniaudio_cli.batch import run_batch
    from uniaudio_cli.tasks.classify import Classifier, ClassifyOptions, default_crop
    from uniaudio_cli.tasks.demos import load_demo_folder

    opts = ClassifyOptions(
        method=_choice("--method", method, ("icl", "prototype")),  # type: ignore[arg-type]
        mode=_choice("--mode", mode, ("default", "paper")),  # type: ignore[arg-type]
        shots=shots,
        repeats=repeats,
        layers=_choice("--layers", layers, ("semantic", "all")),  # type: ignore[arg-type]
        induction=not no_induction,
        crop=default_crop(crop, method, mode),
        center=not no_center,
    )
    folder = load_demo_folder(demos)
    paths = expand_inputs(queries)
    lm, cdc = load_models(llm, codec, device, dtype)
    clf = Classifier(lm, cdc, folder.pick(shots, seed), opts)

    def emit(path: Path, pred: Any) -> None:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "path": pred.path,
                        "label": pred.label,
                        "probability": pred.probability,
                        "probabilities": pred.probabilities,
                    }
                )
            )
        else:
            typer.echo(f"{pred.path}\t{pred.label}\t{pred.probability:.4f}")

    report = run_batch(paths, clf.classify, emit, quiet, "classifying")
    raise typer.Exit(report.exit_code)


@app.command()
@handle_errors
def tts(
    texts: Annotated[list[str], typer.Argument(help='Texts to speak, e.g. "1+1"; - reads one per line from stdin.')],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output WAV (one text).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Write <text>.wav per text here.")] = None,
    demos: Annotated[Path | None, typer.Option("--demos", help="DIR/<text>/<clips> [default: spoken digits]")] = None,
    mode: ModeOpt = "default",
    shots: Annotated[int, typer.Option("--shots", min=1, help="Demonstration clips per text.")] = 5,
    temperature: Annotated[float, typer.Option("--temperature", help="paper mode: 0 = greedy.")] = 0.0,
    seed: SeedOpt = 0,
    llm: LlmOpt = None,
    codec: CodecOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Speak the answer to simple questions (digits) learnt from spoken demonstrations."""
    from uniaudio_cli.audio import write_audio
    from uniaudio_cli.batch import run_batch
    from uniaudio_cli.tasks.demos import load_demo_folder
    from uniaudio_cli.tasks.tts import Synthesizer, TTSOptions, default_tts_demos

    if texts == ["-"]:
        texts = [line.strip() for line in sys.stdin if line.strip()]
    if not texts:
        raise UsageError("no texts given", 'pass texts, e.g. uniaudio tts "1+1" -o two.wav')
    if output is None and out_dir is None:
        raise UsageError("no output given", "pass -o OUT.wav or --out-dir DIR")
    _check_outputs(len(texts), output, out_dir)
    if output is not None and output.exists() and not force:
        raise UsageError(f"{output}: exists", "pass --force to overwrite, or choose another output")
    opts = TTSOptions(
        mode=_choice("--mode", mode, ("default", "paper")),
        shots=shots,  # type: ignore[arg-type]
        temperature=temperature,
        seed=seed,
    )
    folder = load_demo_folder(demos or default_tts_demos())
    lm, cdc = load_models(llm, codec, device, dtype)
    synth = Synthesizer(lm, cdc, folder.clips, opts)
    by_item = {Path(f"{i:06d}"): t for i, t in enumerate(texts)}

    def emit(item: Path, speech: Any) -> None:
        dest = output if output is not None else out_dir / f"{_slug(speech.text)}.wav"  # type: ignore[operator]
        write_audio(dest, speech.audio, speech.sample_rate, force=force)
        extra = f"\tanswer={speech.answer}" if speech.answer is not None else ""
        follows = f"\tfollows={speech.follows}" if speech.follows else ""
        typer.echo(f"{speech.text}\t{dest}{extra}{follows}")

    report = run_batch(list(by_item), lambda item: synth.speak(by_item[item]), emit, quiet, "speaking")
    raise typer.Exit(report.exit_code)


@app.command()
@handle_errors
def denoise(
    inputs: Annotated[list[str], typer.Argument(help="Noisy audio files or folders; - reads paths from stdin.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output WAV (one input).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Write <stem>.wav per input here.")] = None,
    demos: Annotated[
        Path | None, typer.Option("--demos", help="DIR/<name>/clean.wav + noisy*.wav [default: shipped pairs]")
    ] = None,
    mode: ModeOpt = "default",
    pairs: Annotated[int, typer.Option("--pairs", min=1, help="(noisy, clean) demonstration pairs.")] = 4,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Copies of the demonstrations.")] = 1,
    llm: LlmOpt = None,
    codec: CodecOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Remove noise from speech, learnt from (noisy, clean) demonstration pairs."""
    from uniaudio_cli.audio import expand_inputs, output_path_for, write_audio
    from uniaudio_cli.batch import run_batch
    from uniaudio_cli.tasks.denoise import DenoiseOptions, Denoiser, default_denoise_demos, load_pair_folder

    paths = expand_inputs(inputs)
    if output is None and out_dir is None:
        raise UsageError("no output given", "pass -o OUT.wav or --out-dir DIR")
    _check_outputs(len(paths), output, out_dir)
    if output is not None and output.exists() and not force:
        raise UsageError(f"{output}: exists", "pass --force to overwrite, or choose another output")
    pair_set = load_pair_folder(demos or default_denoise_demos())
    opts = DenoiseOptions(
        mode=_choice("--mode", mode, ("default", "paper")),
        pairs=pairs,  # type: ignore[arg-type]
        repeats=repeats,
    )
    lm, cdc = load_models(llm, codec, device, dtype)
    den = Denoiser(lm, cdc, pair_set, opts)

    def emit(path: Path, wav: Any) -> None:
        dest = output if output is not None else output_path_for(path, out_dir, ".wav")  # type: ignore[arg-type]
        write_audio(dest, wav, cdc.sample_rate, force=force)
        typer.echo(f"{path}\t{dest}")

    report = run_batch(paths, den.denoise, emit, quiet, "denoising")
    raise typer.Exit(report.exit_code)


@app.command("train-codec")
@handle_errors
def train_codec_cmd(
    data: Annotated[list[Path], typer.Option("--data", help="Training folders (DIR/<label>/<clips>, metadata.csv).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, train state, metrics.")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Total steps to reach.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    segment_seconds: Annotated[float | None, typer.Option("--segment-seconds")] = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    gan: Annotated[bool | None, typer.Option("--gan/--no-gan", help="Adversarial losses.")] = None,
    gan_start: Annotated[int | None, typer.Option("--gan-start", help="Step at which the GAN losses start.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every", min=1)] = None,
    time_limit: Annotated[
        float | None, typer.Option("--time-limit", help="Stop (with a checkpoint) after S s.")
    ] = None,
    backbone: Annotated[str, typer.Option("--backbone", help="small or published.")] = "small",
    llm: LlmOpt = None,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
    more_data: Annotated[
        list[Path] | None, typer.Argument(help="More training folders (so that --data A B works).", show_default=False)
    ] = None,
) -> None:
    """Train an LLM-Codec for an LLM's vocabulary (rich progress, periodic checkpoints, --resume)."""
    from uniaudio_cli.codec.config import CodecConfig
    from uniaudio_cli.train.trainer import TrainConfig, train_codec

    overrides = {
        "steps": steps,
        "batch_size": batch_size,
        "segment_seconds": segment_seconds,
        "lr": lr,
        "gan": gan,
        "gan_start_step": gan_start,
        "checkpoint_every": checkpoint_every,
        "time_limit_s": time_limit,
        "device": device,
    }
    if resume and steps is None:
        from uniaudio_cli.train.trainer import saved_train_config

        saved = saved_train_config(out)
        if saved is not None:
            overrides["steps"] = saved.steps
    cfg = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    codec_cfg = CodecConfig(backbone=_choice("--backbone", backbone, ("small", "published")))  # type: ignore[arg-type]
    if backbone == "published":
        codec_cfg.latent_dim = codec_cfg.encoder_dim * 2 ** len(codec_cfg.encoder_rates)
    path = train_codec([*data, *(more_data or [])], out, cfg, codec_cfg, resume=resume, llm=llm, progress=not quiet)
    typer.echo(str(path))


@eval_app.command("codec")
@handle_errors
def eval_codec(
    inputs: Annotated[list[str], typer.Argument(help="Audio files or folders; - reads paths from stdin.")],
    codec: CodecOpt = None,
    llm: LlmOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full results as JSON on stdout.")] = False,
    max_files: Annotated[int | None, typer.Option("--max-files", min=1, help="Evaluate the first N files.")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Also write the tables as Markdown.")] = None,
    device: DeviceOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Round-trip audio through the codec: PESQ, STOI, mel distance, tokens/s, codebook usage, RTF."""
    from rich.console import Console

    from uniaudio_cli.audio import expand_inputs, write_text_atomic
    from uniaudio_cli.codec.api import load_codec
    from uniaudio_cli.errors import AudioError
    from uniaudio_cli.evaluate.codec_eval import evaluate_codec
    from uniaudio_cli.evaluate.report import render_rich, to_json, to_markdown

    paths = expand_inputs(inputs)
    if markdown is not None and markdown.exists() and not force:
        raise UsageError(f"{markdown}: exists", "pass --force to overwrite, or choose another output")
    model = load_codec(codec, llm=llm, device=device)
    result = evaluate_codec(model, paths, max_files=max_files, progress=not quiet)
    if not result.clips:
        raise AudioError(f"none of the {len(result.failed)} inputs could be evaluated", "see the errors above")
    report = result.to_report()
    if as_json:
        typer.echo(to_json(report))
    else:
        render_rich(report, Console())
    if markdown is not None:
        write_text_atomic(markdown, to_markdown(report), force=force)
    raise typer.Exit(1 if result.failed else 0)


MarkdownOpt = Annotated[Path | None, typer.Option("--markdown", help="Also write the tables as Markdown.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the full results as JSON on stdout.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Write PNG figures into this folder (matplotlib).")]
ResultsOpt = Annotated[
    Path | None,
    typer.Option("--results", help="Resumable JSONL results [default: $UNIAUDIO_HOME/eval/<settings hash>.jsonl]"),
]


def _emit_report(report: Any, as_json: bool, markdown: Path | None, force: bool) -> None:
    from rich.console import Console

    from uniaudio_cli.audio import write_text_atomic
    from uniaudio_cli.evaluate.report import render_rich, to_json, to_markdown

    if as_json:
        typer.echo(to_json(report))
    else:
        render_rich(report, Console())
    if markdown is not None:
        write_text_atomic(markdown, to_markdown(report), force=force)


def _check_markdown(markdown: Path | None, force: bool) -> None:
    if markdown is not None and markdown.exists() and not force:
        raise UsageError(f"{markdown}: exists", "pass --force to overwrite, or choose another output")


def _plots(fn: Callable[[Any, Path], list[Path]], result: Any, plot: Path | None, quiet: bool) -> None:
    if plot is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise UsageError("--plot needs matplotlib", "pip install matplotlib") from e
    from uniaudio_cli.batch import stderr

    for path in fn(result, plot):
        if not quiet:
            stderr.print(f"wrote {path}", soft_wrap=True)


@eval_app.command("classify")
@handle_errors
def eval_classify(
    data: Annotated[Path, typer.Argument(help="Labelled clips: DIR/<label>/<clips>.")],
    ways: Annotated[int, typer.Option("--ways", min=2, help="Labels per episode (N).")] = 2,
    shots: Annotated[int, typer.Option("--shots", min=1, help="Demonstration clips per label (K).")] = 1,
    repeats: RepeatsOpt = 1,
    no_induction: NoInductionOpt = False,
    layers: LayersOpt = "semantic",
    method: MethodOpt = "icl",
    mode: ModeOpt = "default",
    no_center: NoCenterOpt = False,
    episodes: Annotated[int, typer.Option("--episodes", min=1, help="Episodes per setting.")] = 20,
    queries: Annotated[int, typer.Option("--queries", min=1, help="Query clips per episode (spread over N).")] = 20,
    seed: SeedOpt = 0,
    crop: CropOpt = None,
    grid: Annotated[
        str | None, typer.Option("--grid", help="paper: Table 2 (induction/shots/repeats x layers); ways: N = 2..6.")
    ] = None,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = None,
    plot: PlotOpt = None,
    results: ResultsOpt = None,
    llm: LlmOpt = None,
    codec: CodecOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Few-shot accuracy over seeded N-way K-shot episodes, beside chance, random and MFCC 1-NN.

    Resumable: finished episodes are kept in --results and skipped when the command runs again.
    """
    from uniaudio_cli.evaluate.classify_eval import (
        EpisodeConfig,
        evaluate_classification,
        paper_grid,
        plot_classification,
        ways_grid,
    )
    from uniaudio_cli.tasks.classify import default_crop

    if grid is not None:
        _choice("--grid", grid, ("paper", "ways"))
    _check_markdown(markdown, force)
    base = EpisodeConfig(
        ways=ways,
        shots=shots,
        repeats=repeats,
        induction=not no_induction,
        layers=_choice("--layers", layers, ("semantic", "all")),  # type: ignore[arg-type]
        method=_choice("--method", method, ("icl", "prototype")),  # type: ignore[arg-type]
        mode=_choice("--mode", mode, ("default", "paper")),  # type: ignore[arg-type]
        crop=default_crop(crop, method, mode),
        center=not no_center,
    )
    configs = paper_grid(base) if grid == "paper" else ways_grid(base) if grid == "ways" else [base]
    lm, cdc = load_models(llm, codec, device, dtype)
    result = evaluate_classification(
        lm,
        cdc,
        data,
        configs,
        episodes=episodes,
        queries=queries,
        seed=seed,
        results=results,
        grid=grid,
        progress=not quiet,
    )
    _emit_report(result.to_report(), as_json, markdown, force)
    _plots(plot_classification, result, plot, quiet)


@eval_app.command("tts")
@handle_errors
def eval_tts(
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Write every spoken answer here (WAV).")] = None,
    demos: Annotated[Path | None, typer.Option("--demos", help="DIR/<text>/<clips> [default: spoken digits]")] = None,
    modes: Annotated[
        list[str] | None, typer.Option("--mode", help="uniaudio modes to evaluate (repeatable) [default: both].")
    ] = None,
    shots: Annotated[int, typer.Option("--shots", min=1, help="Demonstration clips per text.")] = 5,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = None,
    llm: LlmOpt = None,
    codec: CodecOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The paper's 20 spoken-digit questions: ACC by an offline recogniser (pocketsphinx), DNSMOS."""
    from uniaudio_cli.evaluate.tts_eval import evaluate_tts

    chosen = tuple(_choice("--mode", m, ("default", "paper")) for m in (modes or ["default", "paper"]))
    _check_markdown(markdown, force)
    lm, cdc = load_models(llm, codec, device, dtype)
    result = evaluate_tts(
        lm, cdc, demos, modes=chosen, shots=shots, seed=seed, out_dir=out_dir, force=force, progress=not quiet
    )
    _emit_report(result.to_report(), as_json, markdown, force)


@eval_app.command("denoise")
@handle_errors
def eval_denoise(
    clean_dir: Annotated[Path, typer.Argument(help="Clean speech (files or a folder).")],
    noise_dir: Annotated[Path, typer.Argument(help="Noise recordings (a folder).")],
    snr: Annotated[
        list[float] | None, typer.Option("--snr", help="SNRs in dB: --snr 0 5 10 (negative: --snr=-5) [0 5 10]")
    ] = None,
    max_files: Annotated[int | None, typer.Option("--max-files", min=1, help="A seeded choice of N files.")] = None,
    seconds: Annotated[float, typer.Option("--seconds", help="Crop/pad the clean speech to S seconds.")] = 4.0,
    mode: ModeOpt = "default",
    demos: Annotated[
        Path | None, typer.Option("--demos", help="DIR/<name>/clean.wav + noisy*.wav [default: shipped pairs]")
    ] = None,
    pairs: Annotated[int, typer.Option("--pairs", min=1, help="(noisy, clean) demonstration pairs.")] = 4,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Copies of the demonstrations.")] = 1,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = None,
    plot: PlotOpt = None,
    results: ResultsOpt = None,
    llm: LlmOpt = None,
    codec: CodecOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    more_snr: Annotated[
        list[float] | None, typer.Argument(help="More SNRs (so that --snr 0 5 10 works).", show_default=False)
    ] = None,
) -> None:
    """Denoise seeded speech + noise mixtures: PESQ-WB / STOI of noisy, uniaudio, noisereduce, codec only.

    Resumable: finished mixtures are kept in --results and skipped when the command runs again.
    """
    from uniaudio_cli.evaluate.denoise_eval import evaluate_denoising, plot_denoising

    snrs = [*(snr or []), *(more_snr or [])] or [0.0, 5.0, 10.0]
    _check_markdown(markdown, force)
    for p in (clean_dir, noise_dir):
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder", "check the path")
    lm, cdc = load_models(llm, codec, device, dtype)
    result = evaluate_denoising(
        lm,
        cdc,
        clean_dir,
        noise_dir,
        snrs=snrs,
        max_files=max_files,
        seconds=seconds,
        mode=_choice("--mode", mode, ("default", "paper")),
        demos=demos,
        pairs=pairs,
        repeats=repeats,
        seed=seed,
        results=results,
        keep_examples=3 if plot is not None else 0,
        progress=not quiet,
    )
    _emit_report(result.to_report(), as_json, markdown, force)
    _plots(plot_denoising, result, plot, quiet)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
