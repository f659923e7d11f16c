"""The ``uniaudio`` command line: a thin layer over the library.

Heavy modules (torch, transformers) are imported inside the commands so ``--help`` is instant.
Every :class:`UniaudioError` becomes one line on stderr with its fix and a non-zero exit code;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from uniaudio_cli.errors import PromptTooLongError, UniaudioError, UsageError

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
T = TypeVar("T")

CodecOpt = Annotated[
    str | None,
    typer.Option("--codec", help="Codec checkpoint folder or published .pth (default: shipped checkpoint)"),
]
LlmOpt = Annotated[
    str | None,
    typer.Option("--llm", help="LLM whose vocabulary the codec uses: HF id, folder or .gguf (default: embedded)"),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N (default: cuda if present)")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summaries on stderr.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``) raised as an exception in the main thread, so that it
    unwinds as Ctrl-C does: temporary outputs are removed and finished ones kept."""


def _on_signal(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM, the first time: later ones are ignored while the run unwinds (removing
    its temporary files), so a second Ctrl-C cannot cut the clean-up short or end in a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if signum == signal.SIGTERM:
        raise Terminated
    raise KeyboardInterrupt


def _fail(message: str, code: int) -> None:
    from uniaudio_cli.batch import print_error

    print_error(message)
    raise typer.Exit(code)


def _set_debug(debug: bool) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


_DEBUG_PARAM = inspect.Parameter(
    "debug",
    inspect.Parameter.KEYWORD_ONLY,
    default=False,
    annotation=Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")],
)


def handle_errors(fn: F) -> F:
    """Turn library errors into one line and an exit code (traceback only with --debug).

    Also gives the command its own ``--debug`` option, so that it works after the
    sub-command as well as before it.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        if debug:
            _set_debug(True)
        try:
            return fn(*args, **kwargs)
        except UniaudioError as e:
            if _state["debug"]:
                import traceback

                traceback.print_exc()
            if e.also:
                from uniaudio_cli.batch import print_error

                print_error(e.one_line())
                for other in e.also:
                    print_error(other.one_line())
                _fail(f"none of the {len(e.also) + 1} inputs is usable", e.exit_code)
            _fail(e.one_line(), e.exit_code)
        except Terminated:
            _fail("terminated", 143)
        except BrokenPipeError:
            # The reader of stdout has gone (`| head`): stop quietly, as a process killed by
            # SIGPIPE would, with its exit status; stdout goes nowhere so that flushing it at
            # exit cannot fail again.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except OSError as e:
            # A file system failure no check foresaw (a cache folder gone read-only, a full
            # disk under a lock file): one line naming the file, not a traceback.
            if _state["debug"]:
                raise
            where = f"{e.filename}: " if e.filename else ""
            _fail(f"{where}{e.strerror or e}", 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            if _state["debug"]:
                raise
            _fail("out of memory", 1)

    sig = inspect.signature(fn, eval_str=True)
    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), _DEBUG_PARAM])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        from uniaudio_cli import __version__

        typer.echo(f"uniaudio {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _set_debug(debug)
    if not debug:
        import os
        import warnings

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # transformers' own tqdm bars (GGUF conversion, weight loading); set through its env
        # switch so that transformers need not be imported for --help.
        os.environ.setdefault("TQDM_DISABLE", "1")
        warnings.filterwarnings("ignore")
        # Except uniaudio's own (a cache it cannot store, a file it recomputes): they say why a
        # run is slower than it should be.
        warnings.filterwarnings("default", module=r"uniaudio_cli(\.|$)")


def _check_outputs(
    n_inputs: int,
    output: Path | None,
    out_dir: Path | None,
    force: bool = False,
    planned: list[Path] | None = None,
) -> None:
    """Check -o/--out-dir before any model loads: one of them, writable, nothing overwritten
    without --force (``planned``: the files --out-dir will receive, where known in advance)."""
    from uniaudio_cli.audio import check_audio_output, check_output_dir, check_output_files

    if output is not None and out_dir is not None:
        raise UsageError("-o and --out-dir both given", "use -o for one input, --out-dir for many")
    if output is not None and n_inputs != 1:
        raise UsageError(f"-o takes one input, {n_inputs} given", "use --out-dir DIR for several inputs")
    if output is not None:
        check_audio_output(output, force)
    if out_dir is not None:
        check_output_dir(out_dir)
        if planned is not None:
            check_output_files(planned, force)


@app.command()
@handle_errors
def encode(
    inputs: Annotated[list[str], typer.Argument(help="Audio files or folders; - reads paths from stdin.")],
    codec: CodecOpt = None,
    llm: LlmOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per input on stdout.")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Write <stem>.json per input here.")] = None,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", help="Refuse longer inputs (default: no limit).")
    ] = None,
    device: DeviceOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Encode audio into LLM tokens: text (one line per layer), --json, or --out-dir files.

    Inputs of any length stream through the codec in windows (memory does not grow with length)."""
    from uniaudio_cli.audio import (
        audio_probe,
        check_inputs,
        check_output_dir,
        check_output_files,
        expand_inputs,
        output_path_for,
        write_text_atomic,
    )
    from uniaudio_cli.batch import run_batch

    if max_seconds is not None:
        _positive("--max-seconds", max_seconds)
    paths = expand_inputs(inputs)
    check_inputs(paths, audio_probe(paths, max_seconds))
    if not quiet:
        _note_format_change(paths, CODEC_RATE, "the codec reads", "; they are converted")
    if out_dir is not None:
        check_output_dir(out_dir)
        check_output_files([output_path_for(p, out_dir, ".json") for p in paths], force)
    model = _load_codec(codec, llm, device, quiet)
    multi = len(paths) > 1

    def emit(path: Path, clip: Any) -> None:
        if out_dir is not None:
            dest = output_path_for(path, out_dir, ".json")
            write_text_atomic(dest, clip.to_json() + "\n", force=force)
            typer.echo(f"{_field(path)}\t{_field(dest)}")
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
    """Decode LLM tokens (from `encode --json`) back to 16 kHz WAV, streamed to the file in windows."""
    from uniaudio_cli.audio import check_inputs, expand_inputs, output_path_for, write_audio_blocks
    from uniaudio_cli.batch import run_batch
    from uniaudio_cli.codec.io import read_encoded

    if output is None and out_dir is None:
        raise UsageError("no output given", "pass -o OUT.wav or --out-dir DIR")
    paths = expand_inputs(inputs, suffixes={".json", ".jsonl"})

    counts: dict[Path, int] = {}

    def probe(path: Path) -> None:
        clips = read_encoded(path)
        if len(clips) > 1 and output is not None:
            raise UsageError(f"{path}: holds {len(clips)} clips", "use --out-dir to write one WAV per clip")
        counts[path] = len(clips)

    def outputs(path: Path, n: int) -> list[Path]:
        """The WAVs --out-dir gets from a file of ``n`` clips: <stem>.wav, or <stem>_000.wav ..."""
        assert out_dir is not None
        suffixes = [".wav"] if n == 1 else [f"_{i:03d}.wav" for i in range(n)]
        return [output_path_for(path, out_dir, suffix) for suffix in suffixes]

    check_inputs(paths, probe)  # stops at the first usable input
    if out_dir is not None:  # every input's clips name its outputs; a bad one is reported when reached
        for p in paths:
            if p not in counts:
                with contextlib.suppress(UniaudioError):
                    probe(p)
    planned = [d for p in paths if p in counts for d in outputs(p, counts[p])] if out_dir else None
    _check_outputs(len(paths), output, out_dir, force, planned)
    model = _load_codec(codec, llm, device, quiet)

    def run(path: Path) -> list[Any]:
        clips = read_encoded(path)
        if len(clips) > 1 and output is not None:
            raise UsageError(f"{path}: holds {len(clips)} clips", "use --out-dir to write one WAV per clip")
        # Checked here, decoded window by window as emit writes each file.
        return [model.decode_clip_blocks(c, str(path)) for c in clips]

    def emit(path: Path, wavs: list[Any]) -> None:
        dests = [output] if output is not None else outputs(path, len(wavs))
        for dest, wav in zip(dests, wavs, strict=True):
            write_audio_blocks(dest, wav, model.sample_rate, force=force)
            typer.echo(f"{_field(path)}\t{_field(dest)}")

    report = run_batch(paths, run, emit, quiet, "decoding")
    raise typer.Exit(report.exit_code)


DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="float32, bfloat16, float16 (default: bf16 on GPU)")]
ModeOpt = Annotated[
    str,
    typer.Option("--mode", help="default (works with small LLMs) or paper (the paper's exact protocol)."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (demonstration draws, sampling).")]
# Options shared by `classify` and `eval classify`.
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="fused (LLM hidden states joined with MFCC and prosody statistics; chosen on four sets), "
        "prototype (LLM hidden states only) or icl (in-context prompt).",
    ),
]
RepeatsOpt = Annotated[int, typer.Option("--repeats", min=1, help="Copies of the demonstration block.")]
LayersOpt = Annotated[str, typer.Option("--layers", help="semantic (layer 1) or all (layers 1-3).")]
NoInductionOpt = Annotated[bool, typer.Option("--no-induction", help="Leave out the instruction line.")]
NoCenterOpt = Annotated[
    bool, typer.Option("--no-center", help="prototype and fused: do not subtract the codec's base-set centre.")
]
CropOpt = Annotated[
    float | None,
    typer.Option("--crop", min=0, help="Crop/pad clips to SECONDS, 0: whole (default: 1 for icl --mode paper, else 0)"),
]


def _context_limit(llm: str | None, codec: str | None, layers: str) -> tuple[int, float] | None:
    """``(the LLM's context, the codec's tokens per second in ``layers``)``, read before the
    models load; ``None`` where either cannot be read without loading (the tasks check again
    once loaded)."""
    from uniaudio_cli.limits import codec_token_rates, llm_context_length

    context, rates = llm_context_length(llm), codec_token_rates(codec)
    if context is None or rates is None:
        return None
    return context, rates[0] if layers == "all" else rates[1]


def _refuse_long_texts(llm: str | None, texts: list[str], fix: str) -> None:
    """Refuse, before the models load, a run none of whose texts fits the LLM's context on its
    own (counted with the model's tokenizer file); a batch with one text that fits goes on, and
    the tasks name each text too long as they reach it."""
    from uniaudio_cli.limits import llm_context_length, text_tokens

    context = llm_context_length(llm)
    if context is not None:
        _refuse_unless_one_fits(texts, lambda t: text_tokens(llm, t), context, "", fix)


def _refuse_unless_one_fits(
    texts: list[str], count: Callable[[str], int | None], context: int, beside: str, fix: str
) -> None:
    """Raise :class:`PromptTooLongError` naming every text (its ``count`` of tokens, ``beside``
    what it is counted with) when none fits ``context``; a text that cannot be counted fits."""
    errors = []
    for t in texts:
        n = count(t)
        if n is None or n <= context:
            return
        errors.append(
            PromptTooLongError(f"{_short(t)!r}: {n} tokens{beside}, more than the LLM's context of {context}", fix)
        )
    errors[0].also = errors[1:]
    raise errors[0]


def _seconds(paths: Iterable[Path]) -> float:
    """Total duration of readable audio files (a bad one is reported where it is read)."""
    import soundfile as sf

    total = 0.0
    for p in paths:
        try:
            total += sf.info(str(p)).duration
        except Exception:
            continue
    return total


def _refuse_long_demos(
    llm: str | None, codec: str | None, seconds: float, what: str, fix: str, layers: str = "all"
) -> None:
    """Refuse, before the models load, demonstrations whose ``seconds`` of audio (read as
    ``layers``' tokens) alone overflow the LLM's context: the prompt holds them all, with each
    query."""
    from uniaudio_cli.limits import context_overflow

    limit = _context_limit(llm, codec, layers)
    overflow = None if limit is None else context_overflow(seconds, limit[1], limit[0])
    if overflow is not None:
        raise PromptTooLongError(f"{what}: {overflow}", fix)


def _refuse_long_icl_prompt(llm: str | None, codec: str | None, chosen: dict[str, list[Path]], opts: Any) -> None:
    """Refuse, before the models load, an icl prompt whose demonstrations alone overflow the
    LLM's context: paper mode's prompt holds every label's clips, the default mode's one
    label's (each ``--repeats`` times), cropped clips counted at most ``--crop`` long."""
    from uniaudio_cli.limits import PROMPT_FIX

    crop = opts.crop_seconds

    def seconds(paths: list[Path]) -> float:
        return sum(min(_seconds([p]), crop or math.inf) for p in paths)

    per_label = [seconds(paths) for paths in chosen.values()]
    held = sum(per_label) if opts.mode == "paper" else max(per_label, default=0.0)
    what = "every label's" if opts.mode == "paper" else "one label's"
    shots = max((len(paths) for paths in chosen.values()), default=0)
    _refuse_long_demos(
        llm,
        codec,
        opts.repeats * held,
        f"the icl prompt ({what} {shots} demonstration clip{'s' if shots != 1 else ''}"
        + (f", x{opts.repeats} with --repeats)" if opts.repeats > 1 else ")"),
        PROMPT_FIX,
        opts.token_layers,
    )


def _refuse_long_tts(
    llm: str | None, codec: str | None, texts: list[str], clips: dict[str, list[Path]], opts: Any
) -> None:
    """tts's prompts, measured before the models load. Paper mode: the demonstrations' audio
    prompt. Default mode: each text's question after the answer examples, as the text step
    scores it (a run none of whose texts fits is refused; the task names each one too long)."""
    if opts.mode == "paper":
        chosen = [p for paths in clips.values() for p in paths[: opts.shots]]
        _refuse_long_demos(
            llm,
            codec,
            _seconds(chosen),
            f"the audio prompt of {len(chosen)} demonstration clips",
            "use fewer --shots or shorter demonstration clips",
        )
        return
    from uniaudio_cli.limits import counting_tokenizer, llm_context_length
    from uniaudio_cli.prompts import AnswerExamples, PromptBuilder, PromptTemplate

    context, tokenizer = llm_context_length(llm), counting_tokenizer(llm)
    if context is None or tokenizer is None:
        return
    builder = PromptBuilder(tokenizer, PromptTemplate.load(opts.answer_template))
    examples = AnswerExamples.load(opts.answer_examples)
    # TextAnswerer's prompt: the examples whose answer is a demonstration text, then the
    # question and the longest candidate answer.
    fixed = len(builder.text_demos([(q, a) for q, a in examples.examples if a in clips]))
    fixed += max(len(builder.answer(t)) for t in clips)
    if fixed >= context:
        raise PromptTooLongError(
            f"the text step's answer examples alone take {fixed} tokens, leaving no room for a question in the "
            f"LLM's context of {context}",
            "use an LLM with a longer context (SmolLM2's is 8,192), or --mode paper",
        )
    _refuse_unless_one_fits(
        texts,
        lambda t: fixed + len(builder.render(builder.template.query, text=t)),
        context,
        " with the answer examples",
        "use a shorter text: the question must fit the LLM's context beside the answer examples",
    )


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UsageError(f"{name} {value!r} is not one of {', '.join(allowed)}", f"use {name} {allowed[0]}")
    return value


def load_models(llm: str | None, codec: str | None, device: str | None, dtype: str | None, quiet: bool = False) -> Any:
    """:func:`uniaudio_cli.api.load_models`, announced on stderr (loading takes seconds)."""
    from uniaudio_cli.runtime import check_runtime_options

    check_runtime_options(device, dtype)
    from uniaudio_cli.api import load_models as load

    if not quiet:
        from uniaudio_cli.batch import print_note

        print_note("loading models ...")
    return load(llm, codec, device, dtype)


def _load_codec(codec: str | None, llm: str | None, device: str | None, quiet: bool) -> Any:
    from uniaudio_cli.runtime import check_runtime_options

    check_runtime_options(device)
    from uniaudio_cli.codec.api import load_codec

    if not quiet:
        from uniaudio_cli.batch import print_note

        print_note("loading the codec ...")
    return load_codec(codec, llm=llm, device=device)


def _field(value: object) -> str:
    """``value`` as one field of a tab-separated output line: a tab or line break inside it (a
    label folder or file name may hold one) is written as ``\\t`` / ``\\n`` / ``\\r``."""
    return str(value).replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _slug(text: str) -> str:
    import re

    slug = re.sub(r"[^A-Za-z0-9+\-]+", "_", text.strip()).strip("_")
    return (slug or "tts")[:60]


@app.command()
@handle_errors
def classify(
    queries: Annotated[list[str], typer.Argument(help="Audio files or folders to label; - reads paths from stdin.")],
    demos: Annotated[Path, typer.Option("--demos", help="Demonstrations: DIR/<label>/<clips>.")],
    method: MethodOpt = "fused",
    mode: ModeOpt = "default",
    shots: Annotated[
        int | None, typer.Option("--shots", min=1, help="Clips per label (a seeded draw) (default: every clip).")
    ] = None,
    repeats: RepeatsOpt = 1,
    layers: LayersOpt = "semantic",
    no_induction: NoInductionOpt = False,
    no_center: NoCenterOpt = False,
    crop: CropOpt = None,
    abstain: Annotated[
        float | None,
        typer.Option(
            "--abstain",
            help="Answer '?' when the best label's probability is below P (e.g. 0.8).",
            metavar="P",
        ),
    ] = None,
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

    from uniaudio_cli.audio import audio_probe, check_inputs, expand_inputs
    from uniaudio_cli.batch import run_batch
    from uniaudio_cli.tasks.demos import check_demo_clips, load_demo_folder
    from uniaudio_cli.tasks.options import METHODS, ClassifyOptions, default_crop

    opts = ClassifyOptions(
        method=_choice("--method", method, METHODS),  # type: ignore[arg-type]
        mode=_choice("--mode", mode, ("default", "paper")),  # type: ignore[arg-type]
        shots=shots or 1,
        repeats=repeats,
        layers=_choice("--layers", layers, ("semantic", "all")),  # type: ignore[arg-type]
        induction=not no_induction,
        crop=default_crop(crop, method, mode),
        center=not no_center,
        abstain=abstain,
    )
    folder = load_demo_folder(demos)
    chosen = folder.pick(shots, seed)
    if not quiet:
        from uniaudio_cli.batch import print_note
        from uniaudio_cli.tasks.demos import describe_demos

        print_note(describe_demos(folder, chosen))
        if opts.mode == "paper" and opts.method != "icl":
            print_note(
                f"note: --mode paper is the paper's in-context prompt, read by --method icl; for --method "
                f"{opts.method} it only makes --crop keep a clip's start; add --method icl for the paper's protocol"
            )
    check_demo_clips((p for clips in chosen.values() for p in clips), opts.max_seconds)
    if opts.method == "icl":
        _refuse_long_icl_prompt(llm, codec, chosen, opts)
    paths = expand_inputs(queries)
    probe = audio_probe(paths, opts.max_seconds)
    # A whole query is read in one prompt: its tokens alone must fit the LLM's context.
    limit = None if opts.crop_seconds else _context_limit(llm, codec, opts.token_layers)
    if limit is not None:

        def probe_fits(p: Path, probe: Callable[[Path], None] = probe, limit: tuple[int, float] = limit) -> None:
            import soundfile as sf

            from uniaudio_cli.errors import AudioError
            from uniaudio_cli.limits import TOO_LONG_FIX, context_overflow

            probe(p)
            overflow = context_overflow(sf.info(str(p)).duration, limit[1], limit[0])
            if overflow is not None:
                raise AudioError(f"{p}: {overflow}", TOO_LONG_FIX)

        probe = probe_fits
    check_inputs(paths, probe)
    lm, cdc = load_models(llm, codec, device, dtype, quiet)
    from uniaudio_cli.tasks.classify import Classifier

    clf = Classifier.from_files(lm, cdc, chosen, opts)

    def emit(path: Path, pred: Any) -> None:
        if not quiet:
            from uniaudio_cli.batch import print_note

            for w in pred.warnings:
                print_note(f"warning: {pred.path}: {w}")
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "path": pred.path,
                        "label": None if pred.abstained else pred.label,
                        "best": pred.label,
                        "probability": pred.probability,
                        "probabilities": pred.probabilities,
                        "warnings": pred.warnings,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            label = "?" if pred.abstained else pred.label
            typer.echo(f"{_field(pred.path)}\t{_field(label)}\t{pred.probability:.4f}")

    report = run_batch(paths, clf.classify, emit, quiet, "classifying")
    raise typer.Exit(report.exit_code)


def _short(text: str, n: int = 60) -> str:
    """``text`` cut to ``n`` characters for a message (a long caption is not echoed whole)."""
    return text if len(text) <= n else text[: n - 3] + "..."


def _naming(text: str, fn: Callable[[], T]) -> T:
    """``fn()``, its :class:`UniaudioError` prefixed with the text it was about, so that each
    failure of a batch of texts says which text failed."""
    try:
        return fn()
    except UniaudioError as e:
        e.message = f"{_short(text)!r}: {e.message}"
        raise


def _texts_to_write(
    texts: list[str], output: Path | None, out_dir: Path | None, force: bool, what: str, usage: str, one: str
) -> list[str]:
    """The texts of ``tts``/``generate`` (``-``: one per line from stdin), each non-empty, and their
    WAV outputs checked (``-o`` for one text, ``--out-dir`` for ``<slug>.wav`` each)."""
    if texts == ["-"]:
        texts = [line.strip() for line in sys.stdin if line.strip()]
    if not texts:
        raise UsageError(f"no {what}s given", f"pass {what}s, e.g. {usage}")
    blank = [i for i, t in enumerate(texts, 1) if not t.strip()]
    if blank:
        raise UsageError(f"{what} {blank[0]} of {len(texts)} is empty", f"pass {one}")
    if output is None and out_dir is None:
        raise UsageError("no output given", "pass -o OUT.wav or --out-dir DIR")
    _check_outputs(
        len(texts), output, out_dir, force, [out_dir / f"{_slug(t)}.wav" for t in texts] if out_dir else None
    )
    return texts


@app.command()
@handle_errors
def tts(
    texts: Annotated[list[str], typer.Argument(help='Texts to speak, e.g. "1+1"; - reads one per line from stdin.')],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output WAV (one text).")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Write <text>.wav per text here (the text made file-name safe).")
    ] = None,
    demos: Annotated[Path | None, typer.Option("--demos", help="DIR/<text>/<clips> (default: spoken digits)")] = None,
    mode: ModeOpt = "default",
    shots: Annotated[int, typer.Option("--shots", min=1, help="Demonstration clips per text.")] = 5,
    temperature: Annotated[float, typer.Option("--temperature", help="paper mode: 0 = greedy.")] = 0.0,
    refuse_unsure: Annotated[
        bool,
        typer.Option(
            "--refuse-unsure", help="Refuse (no output, exit 1) a text whose answer the text step is unsure of."
        ),
    ] = False,
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
    from uniaudio_cli.tasks.demos import check_demo_clips, load_demo_folder
    from uniaudio_cli.tasks.options import TTSOptions, default_tts_demos

    texts = _texts_to_write(
        texts, output, out_dir, force, "text", 'uniaudio tts "1+1" -o two.wav', 'a question or digit, e.g. "1+1"'
    )
    _refuse_long_texts(
        llm, texts, "use a shorter text: the question must fit the LLM's context beside the answer examples"
    )
    opts = TTSOptions(
        mode=_choice("--mode", mode, ("default", "paper")),
        shots=shots,  # type: ignore[arg-type]
        temperature=temperature,
        seed=seed,
        refuse_unsure=refuse_unsure,
    )
    folder = load_demo_folder(demos or default_tts_demos())
    if demos is not None:  # the shipped clips are checked by the tests
        check_demo_clips((p for clips in folder.clips.values() for p in clips), opts.max_seconds)
        short = {label: len(c) for label, c in folder.clips.items() if len(c) < shots}
        if short and not quiet:
            from uniaudio_cli.batch import print_note

            named = ", ".join(f"{_short(label)!r} {n}" for label, n in list(short.items())[:5])
            more = f" and {len(short) - 5} more" if len(short) > 5 else ""
            print_note(f"note: --shots {shots}: fewer clips in {named}{more}; each text uses the clips it has")
    _refuse_long_tts(llm, codec, texts, folder.clips, opts)
    lm, cdc = load_models(llm, codec, device, dtype, quiet)
    from uniaudio_cli.tasks.tts import Synthesizer

    synth = Synthesizer.from_files(lm, cdc, folder.clips, opts)
    by_item = {Path(f"{i:06d}"): t for i, t in enumerate(texts)}

    def emit(item: Path, speech: Any) -> None:
        dest = output if output is not None else out_dir / f"{_slug(speech.text)}.wav"  # type: ignore[operator]
        write_audio(dest, speech.audio, speech.sample_rate, force=force)
        extra = f"\tanswer={speech.answer}" if speech.answer is not None else ""
        if speech.answer_probability is not None:
            extra += f"\tp={speech.answer_probability:.2f}"
        follows = f"\tfollows={_field(speech.follows)}" if speech.follows else ""
        if speech.warning:
            from uniaudio_cli.batch import print_note

            # Printed even with --quiet: the spoken answer may be a confident-sounding wrong digit.
            print_note(f"warning: {_short(speech.text)!r}: {speech.warning}")
        typer.echo(f"{_field(speech.text)}\t{_field(dest)}{extra}{follows}")

    report = run_batch(
        list(by_item), lambda item: _naming(by_item[item], lambda: synth.speak(by_item[item])), emit, quiet, "speaking"
    )
    raise typer.Exit(report.exit_code)


# The codec's (and so every written file's) sample rate; checked against the codec in the tests.
CODEC_RATE = 16000


def _note_format_change(paths: list[Path], rate: int, lead: str = "the output is", then: str = "") -> None:
    """Say once, on stderr, when inputs are not ``rate`` Hz mono (``lead``: what is, e.g. the
    output, or what the codec reads; ``then``: what happens to them)."""
    import soundfile as sf

    from uniaudio_cli.batch import print_note

    other = []
    for p in paths:
        try:
            info = sf.info(str(p))
        except Exception:  # a bad file is reported when it is reached
            continue
        if info.samplerate != rate or info.channels != 1:
            other.append((p, info.samplerate, info.channels))
    if other:
        p, sr, ch = other[0]
        print_note(
            f"note: {lead} {rate // 1000} kHz mono; {len(other)} input(s) are not, "
            f"e.g. {p} ({sr} Hz, {ch} channel{'s' if ch != 1 else ''}){then}"
        )


PairsOpt = Annotated[
    int | None,
    typer.Option("--pairs", min=1, help="(noisy, clean) demonstration pairs (default: all; paper mode: 4)."),
]


@app.command()
@handle_errors
def denoise(
    inputs: Annotated[list[str], typer.Argument(help="Noisy audio files or folders; - reads paths from stdin.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output WAV (one input).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Write <stem>.wav per input here.")] = None,
    demos: Annotated[
        Path | None, typer.Option("--demos", help="DIR/<name>/clean.wav + noisy*.wav (default: shipped pairs)")
    ] = None,
    mode: ModeOpt = "default",
    pairs: PairsOpt = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Copies of the demonstrations (paper mode).")] = 1,
    llm: LlmOpt = None,
    codec: CodecOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Remove noise from speech, learnt from (noisy, clean) demonstration pairs (any length: streamed).

    The output is 16 kHz mono (the codec's rate), whatever the input's rate and channels.
    """
    from uniaudio_cli.audio import audio_probe, check_inputs, expand_inputs, output_path_for, write_audio_blocks
    from uniaudio_cli.batch import run_batch
    from uniaudio_cli.tasks.options import (
        DenoiseOptions,
        check_pairs,
        default_denoise_demos,
        load_pair_folder,
        spread_pairs,
    )

    paths = expand_inputs(inputs)
    check_inputs(paths, audio_probe(paths, DenoiseOptions.max_seconds))
    if output is None and out_dir is None:
        raise UsageError("no output given", "pass -o OUT.wav or --out-dir DIR")
    _check_outputs(
        len(paths), output, out_dir, force, [output_path_for(p, out_dir, ".wav") for p in paths] if out_dir else None
    )
    pair_set = load_pair_folder(demos or default_denoise_demos())
    opts = DenoiseOptions(
        mode=_choice("--mode", mode, ("default", "paper")),
        pairs=pairs,  # type: ignore[arg-type]
        repeats=repeats,
    )
    chosen_pairs = spread_pairs(pair_set, opts.pair_count(len(pair_set)))
    if demos is not None:  # the shipped pairs are checked by the tests
        check_pairs(chosen_pairs, opts.max_seconds, same_length=opts.mode == "default")
    if opts.mode == "paper":  # its prompt holds every chosen pair, --repeats times
        _refuse_long_demos(
            llm,
            codec,
            opts.repeats * _seconds(p for pair in chosen_pairs for p in (pair.noisy, pair.clean)),
            f"the prompt of {len(chosen_pairs)} demonstration pairs"
            + (f" (x{opts.repeats}, --repeats)" if opts.repeats > 1 else ""),
            "use fewer --repeats or --pairs, or shorter demonstration clips",
        )
    if not quiet:
        _note_format_change(paths, CODEC_RATE)
    lm, cdc = load_models(llm, codec, device, dtype, quiet)
    from uniaudio_cli.tasks.denoise import Denoiser

    den = Denoiser.from_pairs(lm, cdc, pair_set, opts)

    def emit(path: Path, wav: Any) -> None:
        dest = output if output is not None else output_path_for(path, out_dir, ".wav")  # type: ignore[arg-type]
        write_audio_blocks(dest, wav, cdc.sample_rate, force=force)
        typer.echo(f"{_field(path)}\t{_field(dest)}")

    # den.stream checks the file and returns its cleaned blocks lazily; emit writes them as they come.
    report = run_batch(paths, den.stream, emit, quiet, "denoising")
    raise typer.Exit(report.exit_code)


# A caption matched with less than this probability gets a warning (`uniaudio generate`).
MIN_MATCH_PROBABILITY = 0.8

GenSecondsOpt = Annotated[
    float | None,
    typer.Option("--seconds", help="Length of each clip (default: the demonstrations' commonest, i.e. --crop)"),
]
GenCropOpt = Annotated[
    float, typer.Option("--crop", min=0, help="Crop/pad demonstrations to S seconds (loudest part); 0: whole.")
]
GenShotsOpt = Annotated[int, typer.Option("--shots", min=1, help="Demonstration clips per caption.")]
GenTemperatureOpt = Annotated[float, typer.Option("--temperature", min=0, help="Sampling temperature; 0: greedy.")]
GenTopKOpt = Annotated[
    int, typer.Option("--top-k", min=0, help="Sample among the K likeliest allowed tokens; 0: all of them.")
]
GenModeOpt = Annotated[
    str, typer.Option("--mode", help="default: write only codes the demonstrations use; paper: any code.")
]


@app.command()
@handle_errors
def generate(
    captions: Annotated[list[str], typer.Argument(help='Captions, e.g. "dog bark"; - reads one per line from stdin.')],
    demos: Annotated[
        Path, typer.Option("--demos", help="Demonstrations: DIR/<caption>/<clips> (_ in a folder name: a space).")
    ],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output WAV (one caption).")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Write <caption>.wav per caption here (made file-name safe).")
    ] = None,
    mode: GenModeOpt = "default",
    seconds: GenSecondsOpt = None,
    shots: GenShotsOpt = 3,
    crop: GenCropOpt = 2.0,
    temperature: GenTemperatureOpt = 1.0,
    top_k: GenTopKOpt = 50,
    seed: SeedOpt = 0,
    no_induction: NoInductionOpt = False,
    llm: LlmOpt = None,
    codec: CodecOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate sound for captions from captioned demonstrations (a small LLM mostly recombines them).

    Prints caption, output, the demonstration the clip copies most and the share of its token pairs found there."""
    from uniaudio_cli.audio import write_audio
    from uniaudio_cli.batch import print_note, run_batch
    from uniaudio_cli.tasks.demos import check_demo_clips, describe_demos, load_demo_folder
    from uniaudio_cli.tasks.options import GenerateOptions, caption_of

    captions = _texts_to_write(
        captions,
        output,
        out_dir,
        force,
        "caption",
        'uniaudio generate "dog bark" -o dog.wav',
        'a caption, e.g. "dog bark"',
    )
    _refuse_long_texts(llm, captions, "use a shorter caption")
    opts = GenerateOptions(
        mode=_choice("--mode", mode, ("default", "paper")),  # type: ignore[arg-type]
        seconds=None if seconds is None else _positive("--seconds", seconds),
        crop=crop,
        shots=shots,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        induction=not no_induction,
    )
    folder = load_demo_folder(demos, min_labels=1)
    chosen = {label: paths[:shots] for label, paths in folder.clips.items()}
    if not quiet:
        print_note(describe_demos(folder, chosen))
        known = {caption_of(label).lower() for label in folder.clips}
        for c in captions:
            if caption_of(c).lower() not in known:
                print_note(
                    f"note: {_short(c)!r} is no demonstration caption; "
                    + (
                        "it will be written from the codes of the nearest caption"
                        if opts.mode == "default"
                        else "the clip will mix the demonstrations"
                    )
                )
    check_demo_clips((p for clips in chosen.values() for p in clips), opts.max_seconds)
    # A lower bound of the prompt: the demonstrations' audio (cropped or padded to --crop) and the
    # clip to write (--seconds, else as long as a cropped demonstration).
    clips = [p for c in chosen.values() for p in c]
    demo_seconds = opts.crop * len(clips) if opts.crop else _seconds(clips)
    clip_seconds = opts.seconds if opts.seconds is not None else (opts.crop or 0.0)
    _refuse_long_demos(
        llm,
        codec,
        clip_seconds + demo_seconds,
        f"--seconds {opts.seconds:g} beside {demo_seconds:g} s of demonstrations"
        if opts.seconds is not None
        else f"{len(clips)} demonstration clips ({demo_seconds:g} s)"
        + (f" and a {clip_seconds:g} s clip" if clip_seconds else ""),
        "use a shorter --seconds, fewer --shots or captions in --demos, or a shorter --crop",
    )
    lm, cdc = load_models(llm, codec, device, dtype, quiet)
    from uniaudio_cli.tasks.generate import SoundGenerator

    gen = SoundGenerator.from_files(lm, cdc, chosen, opts)
    by_item = {Path(f"{i:06d}"): c for i, c in enumerate(captions)}

    def emit(item: Path, sound: Any) -> None:
        dest = output if output is not None else out_dir / f"{_slug(sound.caption)}.wav"  # type: ignore[operator]
        write_audio(dest, sound.audio, sound.sample_rate, force=force)
        steered = "" if sound.steered_by is None else f"\tfrom={sound.steered_by!r}@{sound.match_probability:.2f}"
        if sound.match_probability is not None and sound.match_probability < MIN_MATCH_PROBABILITY and not quiet:
            print_note(
                f"warning: {_short(sound.caption)!r} matches no demonstration caption well "
                f"(nearest {sound.steered_by!r}, p={sound.match_probability:.2f}); add DIR/<caption>/ clips of it"
            )
        typer.echo(
            f"{_field(sound.caption)}\t{_field(dest)}{steered}\tfollows={_field(sound.follows.name)}"
            f"\tcopied={sound.copied:.2f}"
        )

    report = run_batch(
        list(by_item),
        lambda item: _naming(by_item[item], lambda: gen.generate(by_item[item])),
        emit,
        quiet,
        "generating",
    )
    raise typer.Exit(report.exit_code)


def _periods(text: str) -> tuple[int, ...]:
    try:
        periods = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        periods = ()
    if not periods or min(periods) < 2:
        raise UsageError(
            f"--disc-periods {text!r}: not a list of periods", "pass integers of 2 or more, e.g. 2,3,5,7,11"
        )
    return periods


def _positive(option: str, value: float) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{option} {value!r}: not a positive number", f"pass a number above 0, e.g. {option} 10")
    return value


@app.command("train-codec")
@handle_errors
def train_codec_cmd(
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, train state, metrics.")],
    data: Annotated[
        list[Path] | None, typer.Option("--data", help="Training folders (DIR/<label>/<clips>, metadata.csv).")
    ] = None,
    latents: Annotated[
        Path | None,
        typer.Option(
            "--latents",
            help="Train the decoder alone from a latent pack (python -m uniaudio_cli.train.latents pack) "
            "instead of --data; needs --decoder-only.",
        ),
    ] = None,
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
    stop_at: Annotated[
        int | None,
        typer.Option(
            "--stop-at", min=1, help="Stop (with a checkpoint) at this step; the schedule still spans --steps."
        ),
    ] = None,
    backbone: Annotated[str, typer.Option("--backbone", help="small or published.")] = "small",
    init_from: Annotated[
        Path | None,
        typer.Option("--init-from", help="Start a new run from this codec checkpoint folder's weights."),
    ] = None,
    encoder_layers: Annotated[
        int | None,
        typer.Option(
            "--encoder-layers",
            min=1,
            help="Small backbone: encoder blocks (with --init-from, more than it has grows it; the codes change).",
        ),
    ] = None,
    fine_layers: Annotated[
        int | None, typer.Option("--fine-layers", min=1, help="Small backbone: decoder blocks at the STFT rate.")
    ] = None,
    harmonic: Annotated[
        bool,
        typer.Option(
            "--harmonic",
            help="Small backbone: the decoder's phase follows a harmonic oscillator at a pitch it predicts.",
        ),
    ] = False,
    residual_search: Annotated[
        str | None,
        typer.Option(
            "--residual-search",
            help="cosine or euclidean: how layers 2+ pick their codes (default: --init-from's, else cosine).",
        ),
    ] = None,
    codebook_map_hidden: Annotated[
        int | None,
        typer.Option(
            "--codebook-map-hidden",
            min=0,
            help="Width of a residual MLP beside the linear codebook map of layers 2+ (0: linear; "
            "default: --init-from's, else 0). It starts at zero, so a warm start keeps every code.",
        ),
    ] = None,
    lr_schedule: Annotated[str | None, typer.Option("--lr-schedule", help="exponential, cosine or constant.")] = None,
    w_mel: Annotated[float | None, typer.Option("--w-mel", help="Weight of the multi-resolution log-mel loss.")] = None,
    w_stft: Annotated[
        float | None, typer.Option("--w-stft", help="Weight of the log-magnitude + spectral-convergence loss.")
    ] = None,
    w_phase: Annotated[
        float | None,
        typer.Option("--w-phase", min=0.0, help="Weight of the anti-wrapped phase loss (0: off)."),
    ] = None,
    w_low_band: Annotated[
        float | None,
        typer.Option(
            "--w-low-band",
            min=0.0,
            help="Weight of an extra log-magnitude loss below --low-band-hz, where pitch harmonics lie (0: off).",
        ),
    ] = None,
    w_stoi: Annotated[
        float | None,
        typer.Option("--w-stoi", min=0.0, help="Weight of one minus a differentiable STOI (0: off)."),
    ] = None,
    w_pesq: Annotated[
        float | None,
        typer.Option(
            "--w-pesq",
            min=0.0,
            help="Weight of a differentiable estimate of what PESQ's raw score loses (0: off).",
        ),
    ] = None,
    w_excess: Annotated[
        float | None,
        typer.Option(
            "--w-excess",
            min=0.0,
            help="Weight of the log-magnitude excess over the target (energy the output adds; 0: off).",
        ),
    ] = None,
    low_band_hz: Annotated[
        float | None, typer.Option("--low-band-hz", min=50.0, help="Upper edge of --w-low-band's band.")
    ] = None,
    w_pitch: Annotated[
        float | None,
        typer.Option("--w-pitch", min=0.0, help="Weight of the harmonic head's pitch loss (against YIN)."),
    ] = None,
    noise_floor: Annotated[
        float | None,
        typer.Option(
            "--noise-floor",
            min=0.0,
            max=1.0,
            help="Probability that a training segment gets a stationary noise floor (white to brown), "
            "input and target alike, so the codec learns to reproduce recordings' floors (0: off).",
        ),
    ] = None,
    noise_snr: Annotated[
        tuple[float, float] | None,
        typer.Option("--noise-snr", help="That floor's level below the sound's, in dB: LO HI (default 10 40)."),
    ] = None,
    speed_perturb: Annotated[
        float | None,
        typer.Option(
            "--speed-perturb",
            min=0.0,
            max=1.0,
            help="Probability that a training segment is played 0.9-1.1 times as fast, input and target "
            "alike (more voices from the same speakers; 0: off).",
        ),
    ] = None,
    band_limit: Annotated[
        float | None,
        typer.Option(
            "--band-limit",
            min=0.0,
            max=1.0,
            help="Probability that a training segment is band-limited as an 8 kHz recording is (nothing "
            "above 4 kHz), input and target alike (0: off).",
        ),
    ] = None,
    channel_eq: Annotated[
        float | None,
        typer.Option(
            "--channel-eq",
            min=0.0,
            max=1.0,
            help="Probability that a training segment passes through a random smooth equaliser (a tilt "
            "of up to 3 dB per octave and a 6 dB bell), input and target alike: other microphones (0: off).",
        ),
    ] = None,
    reverb: Annotated[
        float | None,
        typer.Option(
            "--reverb",
            min=0.0,
            max=1.0,
            help="Probability that a training segment is heard in a random room (a synthetic impulse "
            "response, RT60 0.15-0.6 s), input and target alike: speakers away from the microphone (0: off).",
        ),
    ] = None,
    disc_channels: Annotated[
        int | None, typer.Option("--disc-channels", min=1, help="Width of the GAN discriminators.")
    ] = None,
    disc_periods: Annotated[
        str | None,
        typer.Option(
            "--disc-periods",
            help="Add HiFi-GAN period discriminators with these periods, e.g. 2,3,5,7,11 (they judge periodicity).",
        ),
    ] = None,
    disc_lr_scale: Annotated[
        float | None,
        typer.Option(
            "--disc-lr-scale",
            help="The discriminators' learning rate as a multiple of --lr (fresh discriminators beside a "
            "trained decoder must catch up; default 1).",
        ),
    ] = None,
    decoder_only: Annotated[
        bool,
        typer.Option(
            "--decoder-only", help="Train only the decoder: the codes (and so classification) stay --init-from's."
        ),
    ] = False,
    bf16: Annotated[
        bool | None,
        typer.Option(
            "--bf16/--no-bf16",
            help="Autocast to bfloat16 (default: on CUDA and on CPUs with native bf16; float32 elsewhere).",
        ),
    ] = None,
    llm: LlmOpt = None,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
    more_data: Annotated[
        list[Path] | None, typer.Argument(help="More training folders (so that --data A B works).", show_default=False)
    ] = None,
) -> None:
    """Train an LLM-Codec for an LLM's vocabulary (rich progress, periodic checkpoints, --resume)."""
    folders = [*(data or []), *(more_data or [])]
    if not folders and latents is None and not resume:
        raise UsageError("nothing to train on", "pass --data FOLDER (or --latents PACK with --decoder-only)")
    if latents is not None and not (latents / "pack.json").is_file():
        raise UsageError(
            f"{latents}: not a latent pack (no pack.json)", "write one with python -m uniaudio_cli.train.latents pack"
        )
    missing = [f for f in folders if not f.is_dir()]
    if missing:
        raise UsageError(f"{missing[0]}: no such folder", "pass folders of audio clips to --data")
    from uniaudio_cli.audio import check_output_dir

    check_output_dir(out, option="--out")
    if resume and not folders and latents is None:
        from uniaudio_cli.train import STATE_FILE

        if not (out / STATE_FILE).is_file():
            raise UsageError(
                f"{out}: no run to resume (no {STATE_FILE})", "pass --data FOLDER to start one, or the run's --out"
            )
    from uniaudio_cli.codec.config import CodecConfig
    from uniaudio_cli.train.data import check_noise_floor
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
        "stop_at": stop_at,
        "device": device,
        "init_from": str(init_from) if init_from is not None else None,
        "lr_schedule": _choice("--lr-schedule", lr_schedule, ("exponential", "cosine", "constant"))
        if lr_schedule is not None
        else None,
        "w_mel": w_mel,
        "w_stft": w_stft,
        "disc_channels": disc_channels,
        "w_phase": w_phase,
        "w_pitch": w_pitch,
        "w_low_band": w_low_band,
        "w_stoi": w_stoi,
        "w_excess": w_excess,
        "w_pesq": w_pesq,
        "low_band_hz": low_band_hz,
        "noise_floor": noise_floor,
        "noise_snr_db": check_noise_floor(noise_floor or 0.0, noise_snr) if noise_snr is not None else None,
        "speed_perturb": speed_perturb,
        "band_limit": band_limit,
        "channel_eq": channel_eq,
        "reverb": reverb,
        "disc_periods": _periods(disc_periods) if disc_periods is not None else None,
        "disc_lr_scale": _positive("--disc-lr-scale", disc_lr_scale) if disc_lr_scale is not None else None,
        "latents": str(latents) if latents is not None else None,
        "decoder_only": decoder_only or None,
        "bf16": bf16,
    }
    if resume and steps is None:
        from uniaudio_cli.train.trainer import saved_train_config

        saved = saved_train_config(out)
        if saved is not None:
            overrides["steps"] = saved.steps
    given = {k: v for k, v in overrides.items() if v is not None}
    cfg = TrainConfig(**given)
    codec_cfg: CodecConfig | None
    if init_from is not None:
        from uniaudio_cli.codec.checkpoint import load_codec_weights

        codec_cfg = load_codec_weights(init_from)[0]
    else:
        codec_cfg = CodecConfig(backbone=_choice("--backbone", backbone, ("small", "published")))  # type: ignore[arg-type]
        if backbone == "published":
            codec_cfg.latent_dim = codec_cfg.encoder_dim * 2 ** len(codec_cfg.encoder_rates)
    if fine_layers is not None:
        codec_cfg.small_fine_layers = fine_layers
    if encoder_layers is not None:
        codec_cfg.small_encoder_layers = encoder_layers
    if harmonic:
        codec_cfg.small_harmonic = True
    if residual_search is not None:
        from uniaudio_cli.codec.config import RESIDUAL_SEARCHES

        codec_cfg.residual_search = _choice("--residual-search", residual_search, RESIDUAL_SEARCHES)  # type: ignore[assignment]
    if codebook_map_hidden is not None:
        codec_cfg.codebook_map_hidden = codebook_map_hidden
    path = train_codec(
        folders, out, cfg, codec_cfg, resume=resume, llm=llm, progress=not quiet, changes=given if resume else None
    )
    typer.echo(str(path))


@eval_app.command("codec")
@handle_errors
def eval_codec(
    inputs: Annotated[list[str], typer.Argument(help="Audio files or folders; - reads paths from stdin.")],
    codec: CodecOpt = None,
    llm: LlmOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full results as JSON on stdout.")] = False,
    max_files: Annotated[
        int | None,
        typer.Option("--max-files", min=1, help="Evaluate N files evenly spaced through the list (every label kept)."),
    ] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Also write the tables as Markdown.")] = None,
    device: DeviceOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Round-trip audio through the codec: PESQ, STOI, mel distance, tokens/s, codebook usage, RTF."""

    from uniaudio_cli.audio import audio_probe, check_inputs, expand_inputs, write_text_atomic
    from uniaudio_cli.errors import AudioError
    from uniaudio_cli.evaluate.codec_eval import evaluate_codec
    from uniaudio_cli.evaluate.report import render_rich, to_json, to_markdown

    paths = expand_inputs(inputs)
    check_inputs(paths, audio_probe(paths, None))
    _check_markdown(markdown, force)
    model = _load_codec(codec, llm, device, quiet)
    result = evaluate_codec(model, paths, max_files=max_files, progress=not quiet)
    if not result.clips:
        raise AudioError(f"none of the {len(result.failed)} inputs could be evaluated", "see the errors above")
    report = result.to_report()
    if as_json:
        typer.echo(to_json(report))
    else:
        render_rich(report, _report_console())
    if markdown is not None:
        write_text_atomic(markdown, to_markdown(report), force=force)
    raise typer.Exit(1 if result.failed else 0)


MarkdownOpt = Annotated[Path | None, typer.Option("--markdown", help="Also write the tables as Markdown.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the full results as JSON on stdout.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Write PNG figures into this folder (matplotlib).")]
ResultsOpt = Annotated[
    Path | None,
    typer.Option("--results", help="Resumable JSONL results (default: $UNIAUDIO_HOME/eval/<settings hash>.jsonl)"),
]


def _report_console() -> Any:
    """A console for report tables: the terminal's width, or wide enough for any table when
    stdout is a file or a pipe (rich would otherwise truncate columns at 80 characters)."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=400, no_color=True)


def _emit_report(report: Any, as_json: bool, markdown: Path | None, force: bool) -> None:

    from uniaudio_cli.audio import write_text_atomic
    from uniaudio_cli.evaluate.report import render_rich, to_json, to_markdown

    if as_json:
        typer.echo(to_json(report))
    else:
        render_rich(report, _report_console())
    if markdown is not None:
        write_text_atomic(markdown, to_markdown(report), force=force)


def _check_markdown(markdown: Path | None, force: bool, *dirs: Path | None) -> None:
    """Check --markdown (and output folders such as --plot/--out-dir) before any model loads."""
    from uniaudio_cli.audio import check_output_dir, check_output_file

    if markdown is not None:
        check_output_file(markdown, force)
    for d in dirs:
        if d is not None:
            check_output_dir(d)


def _workers(device: str | None) -> Any:
    """The processes of this evaluation (:func:`uniaudio_cli.evaluate.parallel.current_workers`):
    one, or those that ``accelerate launch`` / ``torchrun`` started; only the main one reports."""
    from uniaudio_cli.evaluate.parallel import current_workers

    return current_workers(device)


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
    method: MethodOpt = "fused",
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
        check_classification_data,
        evaluate_classification,
        paper_grid,
        plot_classification,
        ways_grid,
    )
    from uniaudio_cli.tasks.options import METHODS, default_crop

    if grid is not None:
        _choice("--grid", grid, ("paper", "ways"))
    _check_markdown(markdown, force, plot)
    base = EpisodeConfig(
        ways=ways,
        shots=shots,
        repeats=repeats,
        induction=not no_induction,
        layers=_choice("--layers", layers, ("semantic", "all")),  # type: ignore[arg-type]
        method=_choice("--method", method, METHODS),  # type: ignore[arg-type]
        mode=_choice("--mode", mode, ("default", "paper")),  # type: ignore[arg-type]
        crop=default_crop(crop, method, mode),
        center=not no_center,
    )
    configs = paper_grid(base) if grid == "paper" else ways_grid(base) if grid == "ways" else [base]
    check_classification_data(data, configs, episodes, queries, seed)
    workers = _workers(device)
    lm, cdc = load_models(llm, codec, workers.device_for(device), dtype, quiet or not workers.is_main)
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
        workers=workers,
    )
    if workers.is_main:
        _emit_report(result.to_report(), as_json, markdown, force)
        _plots(plot_classification, result, plot, quiet)
    workers.close()


@eval_app.command("tts")
@handle_errors
def eval_tts(
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Write every spoken answer here (WAV).")] = None,
    demos: Annotated[Path | None, typer.Option("--demos", help="DIR/<text>/<clips> (default: spoken digits)")] = None,
    modes: Annotated[
        list[str] | None, typer.Option("--mode", help="uniaudio modes to evaluate (repeatable) (default: both).")
    ] = None,
    shots: Annotated[int, typer.Option("--shots", min=1, help="Demonstration clips per text.")] = 5,
    questions: Annotated[
        str,
        typer.Option(
            "--questions",
            help="paper (the paper's 20), arithmetic, reasoning, multistep, or a JSON file.",
        ),
    ] = "paper",
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
    """Spoken-digit questions (the paper's 20, or a level set): ACC by an offline recogniser
    (pocketsphinx), DNSMOS."""
    from uniaudio_cli.evaluate.tts_eval import evaluate_tts, load_questions

    chosen = tuple(_choice("--mode", m, ("default", "paper")) for m in (modes or ["default", "paper"]))
    load_questions(questions)  # a bad set fails here, before any model loads
    _check_markdown(markdown, force, out_dir)
    workers = _workers(device)
    lm, cdc = load_models(llm, codec, workers.device_for(device), dtype, quiet or not workers.is_main)
    result = evaluate_tts(
        lm,
        cdc,
        demos,
        modes=chosen,
        shots=shots,
        seed=seed,
        out_dir=out_dir,
        force=force,
        progress=not quiet,
        workers=workers,
        questions=questions,
    )
    if workers.is_main:
        _emit_report(result.to_report(), as_json, markdown, force)
    workers.close()


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
        Path | None, typer.Option("--demos", help="DIR/<name>/clean.wav + noisy*.wav (default: shipped pairs)")
    ] = None,
    pairs: PairsOpt = None,
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
    """Denoise seeded speech + noise mixtures: PESQ-WB / STOI of noisy, uniaudio, noisereduce, RNNoise, codec only.

    Resumable: finished mixtures are kept in --results and skipped when the command runs again.
    """
    from uniaudio_cli.evaluate.denoise_eval import evaluate_denoising, plot_denoising

    snrs = [*(snr or []), *(more_snr or [])] or [0.0, 5.0, 10.0]
    _check_markdown(markdown, force, plot)
    for p in (clean_dir, noise_dir):
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder", "check the path")
    workers = _workers(device)
    lm, cdc = load_models(llm, codec, workers.device_for(device), dtype, quiet or not workers.is_main)
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
        workers=workers,
    )
    if workers.is_main:
        _emit_report(result.to_report(), as_json, markdown, force)
        _plots(plot_denoising, result, plot, quiet)
    workers.close()


@eval_app.command("generate")
@handle_errors
def eval_generate(
    data: Annotated[
        Path, typer.Argument(help="Labelled clips: DIR/<class>/<clips>; caption = folder name, _ a space.")
    ],
    shots: Annotated[
        int, typer.Option("--shots", min=1, help="Demonstration clips per class; the rest are held out.")
    ] = 3,
    clips: Annotated[int, typer.Option("--clips", min=1, help="Clips generated per class.")] = 2,
    max_heldout: Annotated[
        int | None, typer.Option("--max-heldout", min=2, help="Held-out clips per class at most (default: all).")
    ] = None,
    mode: GenModeOpt = "default",
    seconds: GenSecondsOpt = None,
    crop: GenCropOpt = 2.0,
    temperature: GenTemperatureOpt = 1.0,
    top_k: GenTopKOpt = 50,
    seed: SeedOpt = 0,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Write every generated clip here (<class>/<k>.wav).")
    ] = None,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = None,
    llm: LlmOpt = None,
    codec: CodecOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate clips per class and judge whether each is heard as its class (prototype classifier, MFCC 1-NN),
    beside held-out real clips, copied demonstrations and random demonstrations."""
    from uniaudio_cli.audio import check_output_files
    from uniaudio_cli.evaluate.generate_eval import evaluate_generation, split_clips
    from uniaudio_cli.tasks.demos import load_demo_folder
    from uniaudio_cli.tasks.generate import GenerateOptions

    _check_markdown(markdown, force, out_dir)
    opts = GenerateOptions(
        mode=_choice("--mode", mode, ("default", "paper")),  # type: ignore[arg-type]
        seconds=None if seconds is None else _positive("--seconds", seconds),
        crop=crop,
        shots=shots,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
    )
    folder = load_demo_folder(data)
    split_clips(folder.clips, shots, seed, max_heldout)
    if out_dir is not None:
        check_output_files([out_dir / label / f"{k}.wav" for label in folder.clips for k in range(clips)], force)
    lm, cdc = load_models(llm, codec, device, dtype, quiet)
    result = evaluate_generation(
        lm, cdc, data, opts, clips=clips, max_heldout=max_heldout, out_dir=out_dir, force=force, progress=not quiet
    )
    _emit_report(result.to_report(), as_json, markdown, force)


def main() -> None:
    """Console-script entry point: usage errors, like every other error, become one line."""
    try:  # typer >= 0.25 vendors click
        from typer._click import exceptions as click
    except ImportError:  # pragma: no cover
        from click import exceptions as click  # type: ignore[no-redef]

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        code = app(standalone_mode=False, prog_name="uniaudio")
    except click.NoArgsIsHelpError as e:
        typer.echo(e.ctx.get_help() if e.ctx is not None else e.format_message(), err=True)
        sys.exit(2)
    except click.ClickException as e:
        ctx = getattr(e, "ctx", None)
        fix = f" (fix: see {ctx.command_path} --help)" if ctx is not None else ""
        from uniaudio_cli.batch import print_error

        print_error(f"{e.format_message()}{fix}")
        sys.exit(e.exit_code)
    except typer.Abort:  # Ctrl-C; click's own Abort class moved between typer releases, typer.Abort did not
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
