"""Audio I/O: every kind of bad input gives a one-line AudioError naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import write_tone
from uniaudio_cli.audio import (
    check_audio_output,
    check_output_file,
    check_output_files,
    expand_inputs,
    load_audio,
    write_audio,
    write_audio_blocks,
    write_text_atomic,
)
from uniaudio_cli.errors import AudioError, OutputExistsError, OutputWriteError, UsageError


def test_resamples_and_downmixes(tmp_path: Path) -> None:
    p = write_tone(tmp_path / "stereo44.wav", seconds=0.5, sr=44100, channels=2)
    wav = load_audio(p, 16000)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == pytest.approx(8000, abs=2)
    assert 0.25 < np.abs(wav).max() < 0.35


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.wav", "no such file"),
        (lambda d: _write(d / "empty.wav", b""), "empty file"),
        (lambda d: _write(d / "text.wav", b"hello, not audio"), "not a readable audio file"),
        (lambda d: d, "is a folder"),
    ],
)
def test_bad_files(tmp_path: Path, make, match: str) -> None:
    path = make(tmp_path)
    with pytest.raises(AudioError, match=match) as info:
        load_audio(path)
    assert str(path) in info.value.message
    assert info.value.fix
    assert "\n" not in info.value.one_line()


def test_silence_and_length_limits(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000), 16000)
    with pytest.raises(AudioError, match="silent"):
        load_audio(silent)
    assert load_audio(silent, allow_silence=True).shape == (16000,)
    long = write_tone(tmp_path / "long.wav", seconds=3.0)
    with pytest.raises(AudioError, match="limit is 2 s"):
        load_audio(long, max_seconds=2)
    assert load_audio(long, max_seconds=3).shape == (48000,)  # exactly at the limit is allowed
    no_samples = tmp_path / "zero.wav"
    sf.write(no_samples, np.zeros(0), 16000)
    with pytest.raises(AudioError):
        load_audio(no_samples)


def test_write_is_atomic_and_refuses_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out.wav"
    write_audio(out, np.zeros(160, dtype=np.float32) + 0.1, 16000)
    assert sf.info(out).samplerate == 16000
    with pytest.raises(OutputExistsError, match="--force"):
        write_audio(out, np.zeros(160, dtype=np.float32), 16000)
    write_audio(out, np.zeros(320, dtype=np.float32), 16000, force=True)
    assert sf.info(out).frames == 320
    assert [p.name for p in out.parent.iterdir()] == ["out.wav"]  # no temp files left behind
    with pytest.raises(UsageError, match="unsupported output format"):
        write_audio(tmp_path / "x.mp4", np.zeros(10), 16000)
    for name in ("UPPER.WAV", "upper.FLAC"):  # suffixes in any case
        check_audio_output(tmp_path / name)
        write_audio(tmp_path / name, np.zeros(160, dtype=np.float32), 16000)
        assert sf.info(tmp_path / name).frames == 160
    write_text_atomic(tmp_path / "a.json", "{}")
    with pytest.raises(OutputExistsError):
        write_text_atomic(tmp_path / "a.json", "{}")


def test_an_output_another_run_writes_meanwhile_is_kept_without_force(tmp_path: Path) -> None:
    """Two runs writing one output: the check before writing passes for both; the one that
    finishes second must not replace the first's file unless --force."""
    out = tmp_path / "same.wav"

    def blocks(theirs: int):
        yield np.full(160, 0.1, dtype=np.float32)
        write_audio(out, np.zeros(theirs, dtype=np.float32), 16000, force=True)  # the other run
        yield np.full(160, 0.1, dtype=np.float32)

    with pytest.raises(OutputExistsError, match="exists \\(written by another run meanwhile\\)"):
        write_audio_blocks(out, blocks(480), 16000)
    assert sf.info(out).frames == 480 and [p.name for p in tmp_path.iterdir()] == ["same.wav"]
    write_audio_blocks(out, blocks(480), 16000, force=True)
    assert sf.info(out).frames == 320


def test_a_failed_write_is_one_typed_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk surfaces as OutputWriteError naming the file (soundfile reports it as a
    RuntimeError, Python as OSError), and no temporary file stays behind; an error making the
    blocks is not a write error and propagates as it is."""
    import errno

    def full(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("System error.")

    out = tmp_path / "out.wav"
    with monkeypatch.context() as m:
        m.setattr(sf.SoundFile, "write", full)
        with pytest.raises(OutputWriteError, match=r"out\.wav: could not be written \(System error\.\)"):
            write_audio(out, np.zeros(160, dtype=np.float32), 16000)
    assert list(tmp_path.iterdir()) == []

    def blocks():
        yield np.zeros(160, dtype=np.float32)
        raise ValueError("the model failed")

    with pytest.raises(ValueError, match="the model failed"):
        write_audio_blocks(out, blocks(), 16000)
    assert list(tmp_path.iterdir()) == []
    # The folders a failed write made for its output go again; one that holds a file stays.
    with pytest.raises(ValueError, match="the model failed"):
        write_audio_blocks(tmp_path / "new" / "sub" / "out.wav", blocks(), 16000)
    assert list(tmp_path.iterdir()) == []
    write_audio(tmp_path / "new" / "kept.wav", np.zeros(160, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="the model failed"):
        write_audio_blocks(tmp_path / "new" / "sub" / "out.wav", blocks(), 16000)
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["kept.wav"]
    (tmp_path / "new" / "kept.wav").unlink()
    (tmp_path / "new").rmdir()

    def no_space(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("uniaudio_cli.audio._publish", no_space)
    with pytest.raises(OutputWriteError, match=r"No space left on device.*free some disk space"):
        write_text_atomic(tmp_path / "a.json", "{}")
    with pytest.raises(OutputWriteError, match="No space left"):
        write_audio(out, np.zeros(160, dtype=np.float32), 16000)
    assert list(tmp_path.iterdir()) == []


def test_expand_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write_tone(tmp_path / "d" / "b.wav")
    b = write_tone(tmp_path / "d" / "sub" / "a.flac")
    (tmp_path / "d" / "notes.txt").write_text("x")
    # Hidden files and folders are no inputs (macOS AppleDouble files, notebook checkpoints).
    (tmp_path / "d" / "._b.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    write_tone(tmp_path / "d" / ".ipynb_checkpoints" / "c.wav")
    assert expand_inputs([str(tmp_path / "d")]) == sorted([a, b])
    # A folder named by the user is read even when it is hidden itself.
    assert expand_inputs([str(tmp_path / "d" / ".ipynb_checkpoints")]) == [
        tmp_path / "d" / ".ipynb_checkpoints" / "c.wav"
    ]
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(f"{a}\n\n{b}\n"))
    assert expand_inputs(["-"]) == [a, b]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no"):
        expand_inputs([str(tmp_path / "empty")])
    (tmp_path / "mac").mkdir()
    (tmp_path / "mac" / "._a.wav").write_bytes(b"AppleDouble")
    with pytest.raises(UsageError, match=r"holds no .* files \(only hidden ones, which are skipped: \._a\.wav\)"):
        expand_inputs([str(tmp_path / "mac")])
    with pytest.raises(UsageError, match="no inputs"):
        expand_inputs([])


def test_output_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="is a folder"):
        check_output_file(tmp_path, force=True)
    out = tmp_path / "out"
    # Two inputs of one name in different folders would write one output file: refused up front.
    with pytest.raises(UsageError, match="2 inputs would write this one output"):
        check_output_files([out / "x.wav", out / "y.wav", out / "x.wav"])
    check_output_files([out / "x.wav", out / "y.wav"])
    # --force does not replace a read-only file (a rename would ignore its permissions).
    existing = write_tone(tmp_path / "ro.wav")
    monkeypatch.setattr("uniaudio_cli.audio.os.access", lambda path, mode: False)  # as root, access is always granted
    with pytest.raises(UsageError, match="exists and is read-only"):
        check_output_file(existing, force=True)


def test_written_samples_are_clipped_to_full_scale_in_every_format(tmp_path: Path) -> None:
    loud = 1.5 * np.sin(np.linspace(0, 400 * np.pi, 16000)).astype(np.float32)
    # Vorbis is lossy: its decoding of a clipped wave overshoots a little (unclipped: 1.5).
    for name, tolerance in (("a.wav", 1e-3), ("a.flac", 1e-3), ("a.ogg", 0.1)):
        write_audio(tmp_path / name, loud, 16000)
        back, _ = sf.read(tmp_path / name, dtype="float32")
        assert np.abs(back).max() <= 1.0 + tolerance, name
