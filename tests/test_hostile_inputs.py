"""Hostile names and bad arguments through every command: printed literally, refused before any
model loads (one line, exit 2), outputs with normal permissions."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_tone
from tests.test_tasks import write_label_demos, write_pairs
from uniaudio_cli.cli import app

# Markup and emoji syntax rich would interpret, quotes, spaces and non-ASCII.
HOSTILE = "[red]x[/red] [/tmp] :smile: \"q\" 'é ü 声'"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / HOSTILE
    write_label_demos(root / "labels", {"[dog]": 250.0, "rain :smile:": 2500.0})
    write_label_demos(root / "digits", {"1": 250.0, "2": 700.0}, seconds=0.96)
    write_pairs(root / "pairs")
    write_tone(root / "q" / "a [b].wav", 1.3, freq=320.0)
    write_tone(root / "q" / "c 'd'.wav", 0.7, freq=2400.0)
    return root


def run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(res) -> str:
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, res.output
    assert "Traceback" not in res.output
    return lines[0]


def test_classify_prints_hostile_paths_and_labels_literally(data: Path, loads: list[int]) -> None:
    q = data / "q" / "a [b].wav"
    res = run("classify", "--demos", data / "labels", q, "--quiet")
    assert res.exit_code == 0, res.output
    path, label, _ = res.stdout.strip().split("\t")
    assert path == str(q) and label in ("[dog]", "rain :smile:")
    res = run("classify", "--demos", data / "labels", q, "--json", "--quiet")
    assert set(json.loads(res.stdout)["probabilities"]) == {"[dog]", "rain :smile:"}


@pytest.mark.parametrize("command", ["classify", "encode", "decode", "denoise", "eval codec"])
def test_missing_hostile_path_is_one_literal_line(command: str, tmp_path: Path, loads: list[int]) -> None:
    missing = tmp_path / HOSTILE / "nope.wav"
    args: list[str | Path] = [*command.split(), missing]
    if command == "classify":
        args = ["classify", "--demos", tmp_path / HOSTILE, missing]
    elif command in ("decode", "denoise"):
        args += ["-o", tmp_path / "out.wav"]
    res = run(*args)
    assert res.exit_code in (1, 2)
    line = one_error_line(res)
    assert str(tmp_path / HOSTILE) in line


def test_tts_hostile_text_is_echoed_literally(data: Path, tmp_path: Path, loads: list[int]) -> None:
    out = tmp_path / "[o] :smile:.wav"
    res = run("tts", "[bold]1+1[/bold] :smile:", "--demos", data / "digits", "-o", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("[bold]1+1[/bold] :smile:\t" + str(out))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["tts", "", "-o", "{tmp}/x.wav"], "is empty"),
        (["tts", "1+1", "  ", "--out-dir", "{tmp}/o"], "text 2 of 2 is empty"),
        (["tts", "1+1"], "no output given"),
        (["tts", "1+1", "-o", "{tmp}/x.mp3"], "unsupported output format"),
        (["tts", "1+1", "-o", "-"], "not to stdout"),
        (["tts", "1+1", "-o", "{tmp}/exists.wav"], "exists (fix: pass --force"),
        (["tts", "1+1", "-o", "{tmp}/afile/x.wav"], "afile: exists and is not a folder"),
        (["tts", "1+1", "-o", "{tmp}"], "is a folder"),
        (["tts", "1+1", "--mode", "bogus", "-o", "{tmp}/y.wav"], "--mode 'bogus'"),
        (["denoise", "{data}/q", "--out-dir", "/proc/uniaudio-nope"], "cannot write in /proc"),
        (["denoise", "{data}/q", "--out-dir", "{tmp}/afile"], "is not a folder"),
        (["denoise", "{data}/q/a [b].wav", "{data}/q/c 'd'.wav", "-o", "{tmp}/y.wav"], "-o takes one input"),
        (["denoise", "{data}/q", "--demos", "{tmp}/nodemos", "--out-dir", "{tmp}/d"], "no such demonstration"),
        (["classify", "--demos", "{tmp}/emptydemos", "{data}/q"], "0 label folder(s)"),
        (["classify", "--demos", "{data}/labels", "--shots", "5", "{data}/q"], "--shots 5 needs 5"),
        (["classify", "--demos", "{data}/labels", "--method", "knn", "{data}/q"], "--method 'knn'"),
        (["classify", "--demos", "{data}/labels", "{tmp}/emptydemos"], "folder holds no"),
        (["encode", "{data}/q", "--out-dir", "{tmp}/codes"], "a [b].json: exists"),
        (["decode", "{tmp}/c.json"], "no output given"),
        (["eval", "codec", "{data}/q", "--markdown", "{tmp}/exists.wav"], "exists (fix: pass --force"),
        (["eval", "denoise", "{tmp}/nope", "{tmp}/nope2"], "no such file or folder"),
        (["eval", "classify", "{tmp}/nope"], "nope: no such demonstration folder"),
        (["encode", "{data}/q", "--max-seconds", "-1", "--out-dir", "{tmp}/e"], "--max-seconds -1.0: not a positive"),
        (["classify", "--demos", "{data}/labels", "{data}/q", "--device", "gpu0"], "unknown device 'gpu0'"),
        (["classify", "--demos", "{data}/labels", "{data}/q", "--dtype", "half"], "unknown dtype 'half'"),
        (["tts", "1+1", "-o", "{tmp}/afile/x.wav"], "(fix: choose another output path)"),
        (["train-codec", "--out", "{tmp}/afile", "--data", "{data}/labels"], "(fix: choose another --out)"),
        (["train-codec", "--out", "{tmp}/run", "--data", "{tmp}/nope"], "nope: no such folder"),
        (["train-codec", "--out", "{tmp}/run", "--resume"], "no run to resume (no train_state.safetensors)"),
    ],
)
def test_bad_arguments_fail_before_models_load(
    args: list[str], needle: str, data: Path, tmp_path: Path, loads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_codec(*a, **k):
        raise AssertionError("the codec was loaded")

    monkeypatch.setattr("uniaudio_cli.cli._load_codec", no_codec)
    (tmp_path / "exists.wav").write_bytes(b"x")
    (tmp_path / "afile").write_text("a file, not a folder")
    (tmp_path / "emptydemos").mkdir()
    (tmp_path / "codes").mkdir()
    (tmp_path / "codes" / "a [b].json").write_text("{}")
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{data}", str(data)) for a in args]
    res = run(*argv)
    assert res.exit_code == 2, res.output
    assert needle in one_error_line(res)
    assert loads == []


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path: Path, loads: list[int]) -> None:
    res = run("tts", "", "-o", tmp_path / "x.wav", "--debug")
    assert res.exit_code == 2
    assert "Traceback" in res.stderr and "UsageError" in res.stderr
    assert run("--debug", "tts", "", "-o", tmp_path / "x.wav").exit_code == 2


def test_version() -> None:
    from uniaudio_cli import __version__

    res = run("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"uniaudio {__version__}"


def test_outputs_get_normal_permissions(data: Path, tmp_path: Path, loads: list[int]) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "two.wav"
        assert run("tts", "1+1", "--demos", data / "digits", "-o", out, "--quiet").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(data: Path, loads: list[int]) -> None:
    res = run("classify", "--demos", data / "labels", data / "q")
    assert res.exit_code == 0, res.output
    assert "loading models ..." in res.stderr
    assert "classifying: 2/2 (100 %)" in res.stderr
    assert "\x1b[" not in res.stderr  # no terminal control codes in a log


def test_pair_folder_with_hostile_names_denoises(data: Path, tmp_path: Path, loads: list[int]) -> None:
    out = tmp_path / "[clean].wav"
    res = run("denoise", data / "q" / "a [b].wav", "--demos", data / "pairs", "-o", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert out.is_file() and res.stdout.strip() == f"{data / 'q' / 'a [b].wav'}\t{out}"


def test_classify_uses_every_clip_and_reports_hidden_folders(data: Path, tmp_path: Path, loads: list[int]) -> None:
    demos = write_label_demos(tmp_path / "demos", clips=3)
    write_tone(demos / ".ipynb_checkpoints" / "x.wav", 0.5)
    res = run("classify", "--demos", demos, data / "q" / "a [b].wav")
    assert res.exit_code == 0, res.output
    assert "dog: 3/3, rain: 3/3 clips; hidden folders ignored: .ipynb_checkpoints" in res.stderr
    res = run("classify", "--demos", demos, "--shots", "2", data / "q" / "a [b].wav")
    assert "dog: 2/3, rain: 2/3 clips" in res.stderr
    (tmp_path / "lonely" / ".hidden").mkdir(parents=True)
    write_tone(tmp_path / "lonely" / "dog" / "0.wav", 0.5)
    res = run("classify", "--demos", tmp_path / "lonely", data / "q" / "a [b].wav")
    assert res.exit_code == 2 and "hidden folders are not labels: .hidden" in one_error_line(res)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["classify", "--bogus", "x"], "No such option: --bogus (fix: see uniaudio classify --help)"),
        (["denoise", "x.wav", "--pairs", "0", "-o", "y.wav"], "Invalid value for '--pairs'"),
        (["classify", "--demos", "d", "--crop", "-1", "x.wav"], "Invalid value for '--crop'"),
        (["nosuchcmd"], "No such command"),
    ],
)
def test_usage_errors_of_the_console_script_are_one_line(
    argv: list[str], needle: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from uniaudio_cli.cli import main

    monkeypatch.setattr("sys.argv", ["uniaudio", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]


@pytest.mark.parametrize(("raised", "code"), [(KeyboardInterrupt, 130), ("abort", 130), (SystemExit(1), 1)])
def test_interrupts_and_exits_end_without_a_traceback(
    raised: object, code: int, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Ctrl-C inside a command or while click parses, and rich's exit on a closed pipe
    (``uniaudio --help | head -1``), end with their exit code and no traceback."""
    import typer

    from uniaudio_cli import cli

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise typer.Abort() if raised == "abort" else raised  # type: ignore[misc]

    if raised is KeyboardInterrupt:
        monkeypatch.setattr("uniaudio_cli.audio.expand_inputs", interrupted)
    else:
        monkeypatch.setattr(cli, "app", interrupted)
    monkeypatch.setattr("sys.argv", ["uniaudio", "eval", "codec", "x.wav"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == code
    assert "Traceback" not in capsys.readouterr().err


def test_unusable_single_input_is_refused_before_models_load(tmp_path: Path, data: Path, loads: list[int]) -> None:
    import numpy as np
    import soundfile as sf

    silent = tmp_path / "silent [x].wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    for bad, needle in ((silent, "is silent"), (text, "not a readable audio file")):
        res = run("classify", "--demos", data / "labels", bad)
        assert res.exit_code == 1 and needle in one_error_line(res)
    res = run("denoise", text, "-o", tmp_path / "c.wav")
    assert res.exit_code == 1 and "not a readable audio file" in one_error_line(res)
    assert loads == []


def test_a_bad_demonstration_clip_is_refused_before_models_load(tmp_path: Path, data: Path, loads: list[int]) -> None:
    import shutil

    import numpy as np
    import soundfile as sf

    demos = tmp_path / "demos"
    shutil.copytree(data / "labels", demos)
    nan = demos / "[dog]" / "nan.wav"
    wav = np.full(16000, 0.1, dtype=np.float32)
    wav[100] = np.nan
    sf.write(nan, wav, 16000, subtype="FLOAT")
    res = run("classify", "--demos", demos, data / "q" / "a [b].wav")
    assert res.exit_code == 1 and "nan.wav: contains NaN or infinite samples" in one_error_line(res)
    digits = tmp_path / "digits"
    shutil.copytree(data / "digits", digits)
    sf.write(digits / "1" / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    res = run("tts", "1+1", "--demos", digits, "-o", tmp_path / "x.wav")
    assert res.exit_code == 1 and "silent.wav: is silent" in one_error_line(res)
    assert loads == []


def test_tabs_in_labels_and_names_keep_the_output_three_columns(tmp_path: Path, data: Path, loads: list[int]) -> None:
    import shutil

    demos = tmp_path / "demos"
    shutil.copytree(data / "labels", demos)
    (demos / "[dog]").rename(demos / "dog\tbark")
    query = tmp_path / "q\t1.wav"
    shutil.copy(data / "q" / "a [b].wav", query)
    res = run("classify", "--demos", demos, query, "--quiet")
    assert res.exit_code == 0, res.output
    fields = res.stdout.rstrip("\n").split("\t")
    assert len(fields) == 3 and fields[0] == str(query).replace("\t", "\\t")
    assert fields[1] in ("dog\\tbark", "rain :smile:")


def test_denoise_says_when_the_output_format_differs(tmp_path: Path, data: Path, loads: list[int]) -> None:
    import numpy as np
    import soundfile as sf

    from uniaudio_cli.cli import CODEC_RATE
    from uniaudio_cli.codec.config import CodecConfig

    assert CodecConfig().sample_rate == CODEC_RATE
    stereo = tmp_path / "stereo.wav"
    t = np.arange(44100) / 44100
    sf.write(stereo, np.stack([np.sin(2 * np.pi * 300 * t)] * 2, axis=1) * 0.3, 44100)
    res = run("denoise", stereo, "-o", tmp_path / "out.wav")
    assert res.exit_code == 0, res.output
    assert "note: the output is 16 kHz mono; 1 input(s) are not" in res.stderr
    assert "(44100 Hz, 2 channels)" in res.stderr
    assert sf.info(tmp_path / "out.wav").samplerate == 16000
    res = run("denoise", data / "q" / "a [b].wav", "-o", tmp_path / "mono.wav")
    assert res.exit_code == 0 and "note: the output" not in res.stderr


def test_every_bad_input_of_an_unusable_batch_is_named(tmp_path: Path, loads: list[int]) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    res = run("encode", tmp_path / "nope.wav", empty, "--out-dir", tmp_path / "e")
    assert res.exit_code == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and "Traceback" not in res.output
    assert "nope.wav: no such file" in errors[0] and "empty.wav: empty file" in errors[1]
    assert errors[2] == "error: none of the 2 inputs is usable"
    assert loads == []
    # The run exits with its errors' own code: malformed codes files are a usage error (2).
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text("[]")
    res = run("decode", tmp_path / "a.json", tmp_path / "b.json", "--out-dir", tmp_path / "d")
    assert res.exit_code == 2 and "error: none of the 2 inputs is usable" in res.stderr
    assert loads == []


def test_out_of_memory_is_one_line(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("uniaudio_cli.api.load_models", exhausted)
    res = run("classify", "--demos", data / "labels", data / "q" / "a [b].wav")
    assert res.exit_code == 1
    assert one_error_line(res) == "error: out of memory"


def test_sigterm_unwinds_like_ctrl_c(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``kill``/``timeout`` send SIGTERM: the entry point turns it into an exception, so the
    temporary output is removed on the way out, and the run ends with 143 and one line."""
    import signal

    from uniaudio_cli import cli

    handlers = []

    def terminated(*_args: object, **_kwargs: object) -> None:
        handlers.append((signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)))
        cli._on_signal(signal.SIGTERM, None)

    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    monkeypatch.setattr("uniaudio_cli.audio.expand_inputs", terminated)
    monkeypatch.setattr("sys.argv", ["uniaudio", "eval", "codec", "x.wav"])
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()
        assert handlers == [(cli._on_signal, cli._on_signal)]
        # Once caught, further signals are ignored while the run unwinds.
        assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert exc.value.code == 143
    assert capsys.readouterr().err.strip() == "error: terminated"
    try:
        with pytest.raises(KeyboardInterrupt):
            cli._on_signal(signal.SIGINT, None)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def test_a_failed_write_is_reported_and_the_batch_goes_on(
    data: Path, tmp_path: Path, loads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk fails the file being written, named in one line; the other texts are still
    spoken and written, and the run exits 1 with no temporary file left."""
    import errno

    from uniaudio_cli import audio

    publish, calls = audio._publish, []

    def full_once(tmp: str, dest: Path, force: bool) -> None:
        calls.append(dest)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        publish(tmp, dest, force)

    monkeypatch.setattr(audio, "_publish", full_once)
    out = tmp_path / "out"
    res = run("tts", "1+1", "2+2", "--demos", data / "digits", "--out-dir", out, "--quiet")
    assert res.exit_code == 1, res.output
    line = one_error_line(res)
    assert "could not be written (No space left on device)" in line and str(calls[0]) in line
    assert sorted(p.name for p in out.iterdir()) == [calls[1].name]


def test_a_mismatched_denoising_pair_is_refused_before_models_load(
    tmp_path: Path, data: Path, loads: list[int]
) -> None:
    import shutil

    import numpy as np
    import soundfile as sf

    pairs = tmp_path / "pairs"
    shutil.copytree(data / "pairs", pairs)
    sf.write(pairs / "u1" / "noisy0.wav", np.full(4000, 0.1, dtype=np.float32), 16000)
    res = run("denoise", data / "q" / "a [b].wav", "--demos", pairs, "-o", tmp_path / "c.wav")
    assert res.exit_code == 2
    assert "noisy0.wav: 0.250 s but its clean.wav has 0.500 s" in one_error_line(res)
    assert loads == []


def test_a_failing_text_of_a_batch_is_named_shortened() -> None:
    from uniaudio_cli import cli
    from uniaudio_cli.errors import PromptTooLongError

    def fails() -> None:
        raise PromptTooLongError("caption matching prompt: prompt of 9999 tokens", "use a shorter caption")

    with pytest.raises(PromptTooLongError) as err:
        cli._naming("dog " * 100, fails)
    assert err.value.one_line() == (
        "'dog dog dog dog dog dog dog dog dog dog dog dog dog dog d...': caption matching prompt: "
        "prompt of 9999 tokens (fix: use a shorter caption)"
    )
    assert cli._naming("x", lambda: 3) == 3


def test_state_folder_problems_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A UNIAUDIO_HOME that is a file, an OSError no check foresaw, and the temporary parts a
    killed process leaves in the cache folders."""
    import os
    import time

    from uniaudio_cli import cli
    from uniaudio_cli.errors import UniaudioError
    from uniaudio_cli.paths import cache_dir, remove_stale

    home = tmp_path / "home"
    home.write_text("a file, not a folder")
    monkeypatch.setenv("UNIAUDIO_HOME", str(home))
    with pytest.raises(UniaudioError, match=r"cannot create uniaudio's cache folder.*set UNIAUDIO_HOME"):
        cache_dir("llm")

    def denied(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", "/somewhere/x.lock")

    monkeypatch.setattr("uniaudio_cli.audio.expand_inputs", denied)
    monkeypatch.setattr("sys.argv", ["uniaudio", "eval", "codec", "x.wav"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 1
    assert capsys.readouterr().err.strip() == "error: /somewhere/x.lock: Permission denied"

    folder = tmp_path / "cache"
    folder.mkdir()
    old, fresh = folder / ".a.safetensors.1.tmp", folder / ".b.safetensors.2.tmp"
    old.write_bytes(b"x")
    fresh.write_bytes(b"x")
    (folder / ".convert-old").mkdir()
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    os.utime(folder / ".convert-old", (hour_ago, hour_ago))
    remove_stale(folder, ".*.tmp")
    remove_stale(folder, ".convert-*")
    assert sorted(p.name for p in folder.iterdir()) == [fresh.name]


def test_the_cli_shows_uniaudios_own_warnings_only() -> None:
    import warnings

    from uniaudio_cli import cli

    with warnings.catch_warnings(record=True) as seen:
        cli.main_options(debug=False, version=False)
        warnings.warn_explicit("cannot store a prompt cache", UserWarning, "x.py", 1, module="uniaudio_cli.disk_cache")
        warnings.warn_explicit("chatty", UserWarning, "y.py", 1, module="transformers.modeling_utils")
    assert [str(w.message) for w in seen] == ["cannot store a prompt cache"]


def test_written_models_and_caches_are_readable_to_others(tiny_codec, tmp_path: Path) -> None:
    """safetensors and mkdtemp create private files; a shared model cache or checkpoint must
    follow the umask like any other new file."""
    import torch

    from uniaudio_cli.codec.checkpoint import save_codec
    from uniaudio_cli.disk_cache import SafetensorsFiles
    from uniaudio_cli.paths import save_tensors

    old = os.umask(0o027)
    try:
        save_tensors({"x": torch.zeros(2)}, tmp_path / "t.safetensors")
        ckpt = save_codec(tiny_codec, tmp_path / "ckpt")
        cache = SafetensorsFiles(tmp_path / "cache", "test-format", limit_bytes=1 << 20)
        cache.write("k", {"x": torch.zeros(2)}, {}, "a test entry")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t.safetensors").stat().st_mode) == 0o640
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o750
    assert {stat.S_IMODE(f.stat().st_mode) for f in ckpt.iterdir()} == {0o640}
    assert stat.S_IMODE(cache.path("k").stat().st_mode) == 0o640


def test_audio_too_long_for_the_context_is_refused_before_loading(data: Path, tmp_path: Path, loads: list[int]) -> None:
    """The default LLM reads 8,192 tokens and the default codec writes 58.3 tokens/s of three
    layers (8.3 of layer 1): a whole 150 s query cannot fit the default (fused) method's prompt."""
    long = write_tone(tmp_path / "long.wav", 150.0, freq=300.0)
    res = run("classify", "--demos", data / "labels", long)
    assert res.exit_code == 1
    assert one_error_line(res) == (
        f"error: {long}: 150 s is about 8750 tokens, more than the LLM's context of 8192 (about 140 s) "
        "(fix: cut it into shorter clips, or read part of it with --crop SECONDS)"
    )
    assert loads == []
    # Layer 1 alone fits, and a crop reads only part of the clip: both load and run.
    assert run("classify", "--demos", data / "labels", long, "--method", "icl", "-q").exit_code == 0
    assert run("classify", "--demos", data / "labels", long, "--crop", "1", "-q").exit_code == 0
    assert len(loads) == 2
    res = run("generate", "dog", "--demos", data / "labels", "-o", tmp_path / "g.wav", "--seconds", "150")
    assert res.exit_code == 1  # as when the prompt is found too long after loading
    assert one_error_line(res).startswith("error: --seconds 150 beside 8 s of demonstrations: 158 s is about 9217")
    assert len(loads) == 2


def test_context_and_token_rates_are_read_without_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uniaudio_cli import limits, llm
    from uniaudio_cli.codec.config import CodecConfig
    from uniaudio_cli.paths import default_codec_path

    assert limits.llm_context_length(None) == limits.DEFAULT_CONTEXT_LENGTH
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    assert limits.llm_context_length(str(folder)) == 4096
    (folder / "config.json").write_text(json.dumps({"n_positions": 8192}))  # named otherwise: not guessed
    assert limits.llm_context_length(str(folder)) is None
    (folder / "config.json").write_text("{not json")
    assert limits.llm_context_length(str(folder)) is None  # the load reports it
    # A Hub id: its config.json in the local Hugging Face cache, else only the load can tell.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert limits.llm_context_length("meta-llama/Llama-2-7b-hf") is None
    snapshot = tmp_path / "hub" / "models--meta-llama--Llama-2-7b-hf" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    (snapshot / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    assert limits.llm_context_length("meta-llama/Llama-2-7b-hf") == 4096
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert limits.llm_context_length(str(gguf)) is None  # not converted yet
    converted = tmp_path / "converted"
    converted.mkdir()
    (converted / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    monkeypatch.setattr(llm, "_gguf_cache", lambda p: converted)
    assert limits.llm_context_length(str(gguf)) == 2048
    cfg = CodecConfig.load(default_codec_path() / "config.json")
    assert limits.codec_token_rates(None) == (cfg.tokens_per_second, cfg.frame_rate / cfg.vq_strides[0])
    # The published codec's rates are its architecture's (hop 480, strides 4/2/1), whatever the file.
    assert limits.codec_token_rates(tmp_path / "published.pth") == (1750 / 30, 250 / 30)
    assert limits.context_overflow(140.0, 58.3, 8192) is None
    assert limits.context_overflow(1e300, 58.3, 8192).startswith("1e+300 s is about 5.83e+301 tokens")


def _tokenizer_folder(root: Path, context: int) -> Path:
    """A model folder with only what the pre-load checks read: config.json and tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    root.mkdir()
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "word": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(root / "tokenizer.json"))
    (root / "config.json").write_text(json.dumps({"max_position_embeddings": context}))
    return root


def test_texts_too_long_for_the_context_are_refused_before_loading(
    data: Path, tmp_path: Path, loads: list[int]
) -> None:
    llm = _tokenizer_folder(tmp_path / "llm", context=64)
    long = "word " * 100
    res = run("tts", long, "--llm", llm, "-o", tmp_path / "a.wav", "--demos", data / "digits")
    assert res.exit_code == 1
    assert one_error_line(res) == (
        "error: 'word word word word word word word word word word word wo...': 100 tokens, more than the "
        "LLM's context of 64 (fix: use a shorter text: the question must fit the LLM's context beside the "
        "answer examples)"
    )
    res = run("generate", long, "--llm", llm, "-o", tmp_path / "b.wav", "--demos", data / "labels")
    assert res.exit_code == 1 and "100 tokens, more than the LLM's context of 64" in res.stderr
    assert "(fix: use a shorter caption)" in res.stderr
    # Fits alone (100 tokens), not after the answer examples whose answer is a demonstration
    # text (97 tokens for "1" and "2"), the question's frame and the answer (5).
    roomier = _tokenizer_folder(tmp_path / "llm150", context=150)
    res = run("tts", long, "--llm", roomier, "-o", tmp_path / "a.wav", "--demos", data / "digits")
    assert res.exit_code == 1
    assert one_error_line(res) == (
        "error: 'word word word word word word word word word word word wo...': 202 tokens with the answer "
        "examples, more than the LLM's context of 150 (fix: use a shorter text: the question must fit the "
        "LLM's context beside the answer examples)"
    )
    assert loads == []
    # No text can fit where the examples alone fill the context.
    res = run("tts", "1+1", "--llm", _tokenizer_folder(tmp_path / "llm90", context=90), "-o", tmp_path / "a.wav")
    assert one_error_line(res) == (
        "error: the text step's answer examples alone take 517 tokens, leaving no room for a question in the "
        "LLM's context of 90 (fix: "
        "use an LLM with a longer context (SmolLM2's is 8,192), or --mode paper)"
    )
    assert loads == []
    # One text that fits: the batch goes on (the task names each text too long as it reaches it).
    res = run("tts", long, "1+1", "--llm", roomier, "--out-dir", tmp_path / "out", "--demos", data / "digits", "-q")
    assert len(loads) == 1


def test_demonstration_prompts_too_long_for_the_context_are_refused_before_loading(
    data: Path, tmp_path: Path, loads: list[int]
) -> None:
    """Paper-mode prompts hold every demonstration's codes (58.3 tokens/s with the default codec)."""
    llm = _tokenizer_folder(tmp_path / "llm", context=150)
    res = run("tts", "1+1", "--mode", "paper", "--llm", llm, "-o", tmp_path / "a.wav", "--demos", data / "digits")
    assert res.exit_code == 1
    assert one_error_line(res) == (
        "error: the audio prompt of 4 demonstration clips: 4 s is about 224 tokens, more than the LLM's context "
        "of 150 (about 3 s) (fix: use fewer --shots or shorter demonstration clips)"
    )
    pairs = ("--demos", data / "pairs", "--mode", "paper", "--llm", llm)
    res = run("denoise", data / "q" / "a [b].wav", *pairs, "-o", tmp_path / "d.wav")
    assert res.exit_code == 1
    assert one_error_line(res) == (
        "error: the prompt of 3 demonstration pairs: 3 s is about 175 tokens, more than the LLM's context of 150 "
        "(about 3 s) (fix: use fewer --repeats or --pairs, or shorter demonstration clips)"
    )
    res = run("denoise", data / "q" / "a [b].wav", *pairs, "--pairs", "2", "--repeats", "2", "-o", tmp_path / "d.wav")
    assert one_error_line(res).startswith(
        "error: the prompt of 2 demonstration pairs (x2, --repeats): 4 s is about 233"
    )
    icl = ("classify", "--demos", data / "labels", data / "q", "--method", "icl", "--llm", llm, "--layers", "all")
    res = run(*icl, "--mode", "paper")  # 2 labels x 2 clips cropped to 1 s
    assert res.exit_code == 1
    assert one_error_line(res) == (
        "error: the icl prompt (every label's 2 demonstration clips): 4 s is about 233 tokens, more than the "
        "LLM's context of 150 (about 3 s) (fix: use fewer --shots/--repeats, a shorter --crop, --layers "
        "semantic, or an LLM with a longer context)"
    )
    res = run(*icl, "--repeats", "2")  # one label's 2 whole clips, twice
    assert one_error_line(res).startswith("error: the icl prompt (one label's 2 demonstration clips, x2 with")
    assert loads == []
    # What fits loads: one clip per text, two pairs once, one label's clips once.
    run(
        "tts",
        "1+1",
        "--mode",
        "paper",
        "--shots",
        "1",
        "--llm",
        llm,
        "-o",
        tmp_path / "a.wav",
        "--demos",
        data / "digits",
    )
    run("denoise", data / "q" / "a [b].wav", *pairs, "--pairs", "2", "-o", tmp_path / "d.wav")
    run(*icl, "-q")
    assert len(loads) == 3
    # generate: every caption's clips padded to --crop, then the clip to write (as long).
    res = run("generate", "dog", "--demos", data / "labels", "--llm", llm, "-o", tmp_path / "g.wav")
    assert res.exit_code == 1
    assert one_error_line(res) == (
        "error: 4 demonstration clips (8 s) and a 2 s clip: 10 s is about 583 tokens, more than the LLM's "
        "context of 150 (about 3 s) (fix: use a shorter --seconds, fewer --shots or captions in --demos, or a "
        "shorter --crop)"
    )
    res = run("generate", "dog", "--demos", data / "labels", "--llm", llm, "-o", tmp_path / "g.wav", "--crop", "0")
    assert one_error_line(res).startswith("error: 4 demonstration clips (4 s): 4 s is about 233")
    assert len(loads) == 3


def test_a_closed_stdout_ends_the_run_quietly_with_sigpipes_status(tmp_path: Path) -> None:
    """`uniaudio ... | head -1`: once the reader has gone, the run stops with 141 (128 + SIGPIPE),
    as a process killed by the signal would, and prints no error."""
    import subprocess
    import sys

    script = tmp_path / "pipe.py"
    script.write_text(
        "import typer\n"
        "from uniaudio_cli.cli import handle_errors\n"
        "app = typer.Typer()\n"
        "@app.command()\n"
        "@handle_errors\n"
        "def lines() -> None:\n"
        "    for i in range(100000):\n"
        "        typer.echo(f'line {i}')\n"
        "app()\n"
    )
    res = subprocess.run(
        f"{sys.executable} {script} | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 141 and res.stdout == "line 0\n" and res.stderr == ""
