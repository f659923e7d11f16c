"""Audio I/O: reading any format soundfile knows into 16 kHz mono, and atomic writes."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniaudio_cli.errors import AudioError, OutputExistsError, OutputWriteError, UniaudioError, UsageError
from uniaudio_cli.paths import make_shareable

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".opus", ".w64", ".caf"}

# Peak below this (about -80 dBFS) counts as digital silence.
SILENCE_PEAK = 1e-4


# Blocks of this many seconds (at the file's rate) are read at a time when streaming a file.
BLOCK_SECONDS = 10.0


def _check_file(p: Path) -> None:
    if not p.exists():
        raise AudioError(f"{p}: no such file", "check the path")
    if p.is_dir():
        raise AudioError(f"{p}: is a folder, expected an audio file", "pass the files inside it")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: empty file (0 bytes)", "re-export or remove it")


def _unreadable(p: Path, e: Exception) -> AudioError:
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    return AudioError(
        f"{p}: not a readable audio file ({detail})", "convert it to WAV or FLAC (e.g. ffmpeg -i in out.wav)"
    )


def _too_long(p: Path, frames: int, rate: int, max_seconds: float | None) -> AudioError | None:
    if max_seconds is not None and frames / max(rate, 1) > max_seconds:
        return AudioError(
            f"{p}: {frames / rate:.1f} s long, the limit is {max_seconds:g} s",
            f"cut it into shorter clips (e.g. sox in.wav out.wav trim 0 {min(30.0, max_seconds):g})",
        )
    return None


@dataclass(frozen=True)
class AudioReader:
    """An audio file opened for reading block by block as float32 mono at ``sample_rate``.

    Made by :func:`open_audio`, which has checked the header. :meth:`blocks` reads, downmixes
    and resamples (soxr HQ, streaming) a block at a time, so memory does not grow with the
    file's length; the concatenated blocks equal :func:`load_audio` sample for sample.

    Attributes:
        path: the file.
        sample_rate: rate of the samples :meth:`blocks` yields.
        source_rate: the file's rate.
        source_frames: the file's length in frames at ``source_rate``.
        allow_silence: when False, :meth:`blocks` raises :class:`AudioError` after the last
            block of a silent file.
    """

    path: Path
    sample_rate: int
    source_rate: int
    source_frames: int
    allow_silence: bool = False

    @property
    def num_samples(self) -> int:
        """Samples :meth:`blocks` yields in all (``ceil`` of the resampled length, as librosa)."""
        if self.source_rate == self.sample_rate:
            return self.source_frames
        return -(-self.source_frames * self.sample_rate // self.source_rate)

    @property
    def seconds(self) -> float:
        return self.source_frames / self.source_rate

    def blocks(self, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        """Consecutive float32 mono ``(n,)`` blocks at ``sample_rate``; raises :class:`AudioError`
        (naming the file) on unreadable data, NaN or infinite samples, and silence (at the end,
        unless ``allow_silence``)."""
        import soundfile as sf

        p, total = self.path, self.num_samples
        resampler = None
        if self.source_rate != self.sample_rate:
            import soxr

            resampler = soxr.ResampleStream(self.source_rate, self.sample_rate, 1, dtype="float32", quality="HQ")
        size = max(int(block_seconds * self.source_rate), 1)
        emitted, peak, read = 0, 0.0, 0
        try:
            f = sf.SoundFile(str(p))
        except Exception as e:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
            raise _unreadable(p, e) from e
        with f:
            while True:
                try:
                    data = f.read(size, dtype="float32", always_2d=True)
                except Exception as e:
                    raise _unreadable(p, e) from e
                last = len(data) < size
                read += len(data)
                wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
                if not np.all(np.isfinite(wav)):
                    raise AudioError(f"{p}: contains NaN or infinite samples", "re-export it")
                if resampler is not None:
                    wav = resampler.resample_chunk(wav, last=last)
                wav = wav[: max(total - emitted, 0)]
                if len(wav):
                    peak = max(peak, float(np.abs(wav).max()))
                    emitted += len(wav)
                    yield np.ascontiguousarray(wav, dtype=np.float32)
                if last:
                    break
        if read == 0:
            raise AudioError(f"{p}: contains no samples", "re-export or remove it")
        if emitted < total:  # the resampler's output is one sample short of ceil() at some rates
            yield np.zeros(total - emitted, dtype=np.float32)
        if not self.allow_silence and peak < SILENCE_PEAK:
            raise AudioError(f"{p}: is silent", "pass a clip with audible sound")


def open_audio(
    path: str | Path,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    allow_silence: bool = False,
) -> AudioReader:
    """Check ``path``'s header and return an :class:`AudioReader` that streams it as float32 mono
    at ``sample_rate``. Raises :class:`AudioError` naming the file for missing, empty,
    unreadable or too long (over ``max_seconds``) input; silence is found while reading."""
    import soundfile as sf

    p = Path(path)
    _check_file(p)
    try:
        info = sf.info(str(p))
    except Exception as e:
        raise _unreadable(p, e) from e
    err = _too_long(p, info.frames, info.samplerate, max_seconds)
    if err is not None:
        raise err
    if info.frames == 0:
        raise AudioError(f"{p}: contains no samples", "re-export or remove it")
    return AudioReader(p, sample_rate, int(info.samplerate), int(info.frames), allow_silence)


def load_audio(
    path: str | Path,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    allow_silence: bool = False,
) -> np.ndarray:
    """Read ``path`` as float32 mono ``(T,)`` at ``sample_rate``, downmixing and resampling.

    Raises :class:`AudioError` naming the file for missing, empty, unreadable, silent
    (unless ``allow_silence``) or too long (over ``max_seconds``) input. Long files are better
    streamed with :func:`open_audio`.
    """
    blocks = list(open_audio(path, sample_rate, max_seconds, allow_silence).blocks())
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def as_mono(wav: object, source: str = "audio") -> np.ndarray:
    """In-memory audio as the codec takes it: ``(T,)`` float32, from a numpy array or a torch
    tensor ``(T,)`` (or ``(T, 1)`` / ``(1, T)``). Refuses, naming ``source``, what would be
    misread: several channels, integer samples (int16 read as floats would be 32768 times too
    loud), no samples, NaN or infinite samples (:class:`AudioError`, :class:`UsageError`)."""
    if hasattr(wav, "detach") and hasattr(wav, "cpu"):  # a torch tensor, without importing torch
        wav = wav.detach().cpu().float().numpy()  # type: ignore[attr-defined]
    if not isinstance(wav, np.ndarray):
        raise UsageError(f"{source}: {type(wav).__name__} is not audio", "pass a (T,) float numpy array or tensor")
    if wav.ndim == 2 and 1 in wav.shape:
        wav = wav.reshape(-1)
    if wav.ndim != 1:
        raise UsageError(
            f"{source}: audio of shape {tuple(wav.shape)}, expected mono (T,)",
            "downmix first, e.g. wav.mean(axis=1) for (T, channels)",
        )
    if not np.issubdtype(wav.dtype, np.floating):
        raise UsageError(
            f"{source}: {wav.dtype} samples, expected floats in [-1, 1]",
            "scale integer PCM first, e.g. wav / 32768 for int16",
        )
    if wav.size == 0:
        raise AudioError(f"{source}: no samples", "pass at least 0.1 s of audio")
    x = wav.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise AudioError(f"{source}: contains NaN or infinite samples", "clean or re-export the audio")
    return x


def _publish(tmp: str, dest: Path, force: bool) -> None:
    """Give a finished temporary file normal permissions (mkstemp makes it 0600) and move it
    into place in one step. Without ``force`` a file that appeared at ``dest`` meanwhile (another
    run writing the same output) is kept and :class:`OutputExistsError` raised: a hard link
    fails where ``dest`` exists, as a rename would not."""
    make_shareable(tmp)
    if force:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise OutputExistsError(
            f"{dest}: exists (written by another run meanwhile)", "pass --force to overwrite, or choose another output"
        ) from None
    except OSError:  # a file system without hard links: the check before writing must do
        if os.path.lexists(dest):
            raise OutputExistsError(f"{dest}: exists", "pass --force to overwrite, or choose another output") from None
        os.replace(tmp, dest)
        return
    with contextlib.suppress(OSError):  # the output is in place; _atomic_output removes it too
        os.unlink(tmp)


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(out_dir: str | Path, option: str = "--out-dir") -> Path:
    """Refuse an output folder that cannot be written (checked before any model loads).

    The folder may not exist yet; then the nearest existing parent must be a writable folder.
    Raises :class:`UsageError` naming the folder and the fix (``option``: the option that
    named it, for the fix).
    """
    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise UsageError(f"{d}: exists and is not a folder", f"choose another {option}")
    base = _nearest_existing(d)
    if not base.is_dir():
        raise UsageError(f"{d}: {base} is not a folder", f"choose another {option}")
    # Probe with a real file: os.access says yes to root even on read-only or virtual file
    # systems such as /proc.
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".uniaudio-probe-"):
            pass
    except OSError as e:
        raise UsageError(
            f"{d}: cannot write in {base} ({e.strerror or type(e).__name__})", "choose a folder you can write to"
        ) from e
    return d


def check_output_file(path: str | Path, force: bool = False) -> Path:
    """Refuse an output file that exists (unless ``force``) or whose folder cannot be written;
    checked before any model loads. Raises :class:`UsageError` naming the file and the fix."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{p}: is a folder", "pass a file name, or --out-dir for a folder")
    if p.exists() and not force:
        raise UsageError(f"{p}: exists", "pass --force to overwrite, or choose another output")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{p}: exists and is read-only", "choose another output")
    check_output_dir(p.parent, option="output path")
    return p


AUDIO_OUTPUT_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def check_audio_output(path: str | Path, force: bool = False) -> Path:
    """:func:`check_output_file` plus a file name whose extension names a format we write."""
    p = Path(path)
    if str(path) == "-":
        raise UsageError("-o -: audio is written to files, not to stdout", "pass a .wav or .flac file name")
    if p.is_dir():
        raise UsageError(f"{p}: is a folder", "pass a file name, or --out-dir for a folder")
    if p.suffix.lower() not in AUDIO_OUTPUT_FORMATS:
        raise UsageError(f"{p}: unsupported output format {p.suffix or '(none)'!r}", "use a .wav or .flac file name")
    return check_output_file(p, force)


def check_output_files(paths: Iterable[Path], force: bool = False) -> None:
    """:func:`check_output_file` for every planned output, plus two inputs mapping to one output."""
    seen: dict[Path, int] = {}
    for p in paths:
        check_output_file(p, force)
        seen[p] = seen.get(p, 0) + 1
    clash = [p for p, n in seen.items() if n > 1]
    if clash:
        raise UsageError(
            f"{clash[0]}: {seen[clash[0]]} inputs would write this one output",
            "give the inputs distinct file names, or run them separately",
        )


def write_audio(path: str | Path, wav: np.ndarray, sample_rate: int, force: bool = False) -> Path:
    """Write ``(T,)`` float audio as 16-bit PCM atomically (temp file + rename).

    Refuses to replace an existing file unless ``force``.
    """
    return write_audio_blocks(path, [wav], sample_rate, force)


def _write_error(p: Path, e: Exception) -> OutputWriteError:
    """A failed write of ``p`` (disk full, quota, I/O error) as the one-line error the CLI prints."""
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
    if not isinstance(e, OSError):
        # libsndfile says only "System error."; a full disk is the usual cause, so say so.
        with contextlib.suppress(OSError):
            if shutil.disk_usage(_nearest_existing(p.parent)).free < 1 << 20:
                reason = f"{reason.rstrip('.')}: no space left on the device"
    return OutputWriteError(f"{p}: could not be written ({reason})", "free some disk space, or choose another output")


@contextlib.contextmanager
def _atomic_output(p: Path, suffix: str = "", force: bool = False) -> Iterator[str]:
    """A new empty temporary file beside ``p`` for the body to write, renamed onto ``p`` once the
    body returns. A failure, in the body or in the rename, removes the temporary file and the
    folders made for it that are still empty, so nothing is left behind; a file system error
    here becomes :class:`OutputWriteError`."""
    made = [d for d in [p.parent, *p.parent.parents] if not d.exists()][::-1]  # outermost first
    tmp: str | None = None
    done = False
    try:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=suffix, dir=p.parent)
            os.close(fd)
        except OSError as e:
            raise _write_error(p, e) from e
        yield tmp
        try:
            _publish(tmp, p, force)
        except OSError as e:
            raise _write_error(p, e) from e
        done = True
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        for d in [] if done else reversed(made):
            with contextlib.suppress(OSError):  # not empty (another output landed there), or gone
                d.rmdir()


def write_audio_blocks(path: str | Path, blocks: Iterable[np.ndarray], sample_rate: int, force: bool = False) -> Path:
    """Write consecutive ``(n,)`` float blocks as one 16-bit PCM file (Vorbis for ``.ogg``),
    atomically: the blocks go to a temporary file beside ``path`` as they come (memory holds
    one block), which is renamed into place after the last; an error on the way leaves no
    output. Refuses to replace an existing file unless ``force``; a failed write (a full disk)
    raises :class:`OutputWriteError`, while an error making the blocks propagates as it is.
    """
    import soundfile as sf

    p = Path(path)
    if p.exists() and not force:
        raise OutputExistsError(f"{p}: exists", "pass --force to overwrite, or choose another output")
    suffix = p.suffix.lower() or ".wav"
    fmt = AUDIO_OUTPUT_FORMATS.get(suffix)
    if fmt is None:
        raise UsageError(f"{p}: unsupported output format {suffix!r}", "use a .wav or .flac file name")
    with _atomic_output(p, suffix, force) as tmp:
        subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
        try:
            f = sf.SoundFile(tmp, "w", samplerate=sample_rate, channels=1, format=fmt, subtype=subtype)
        except (OSError, RuntimeError) as e:  # soundfile's errors are RuntimeErrors
            raise _write_error(p, e) from e
        try:
            for block in blocks:
                data = np.clip(np.asarray(block, dtype=np.float32).reshape(-1), -1.0, 1.0)
                try:
                    f.write(data)
                except (OSError, RuntimeError) as e:
                    raise _write_error(p, e) from e
        except BaseException:
            with contextlib.suppress(Exception):
                f.close()
            raise
        try:
            f.close()
        except (OSError, RuntimeError) as e:
            raise _write_error(p, e) from e
    return p


def write_text_atomic(path: str | Path, text: str, force: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically; refuse to overwrite unless ``force``; a failed
    write (a full disk) raises :class:`OutputWriteError` and leaves nothing behind."""
    p = Path(path)
    if p.exists() and not force:
        raise OutputExistsError(f"{p}: exists", "pass --force to overwrite, or choose another output")
    with _atomic_output(p, force=force) as tmp:
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise _write_error(p, e) from e
    return p


def is_audio_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith(".")


def expand_inputs(items: Iterable[str], suffixes: set[str] | None = None) -> list[Path]:
    """Turn CLI arguments into files: folders expand (recursively, sorted), ``-`` reads paths
    from stdin, one per line. Missing paths are kept so that the caller reports them per file.

    A folder's hidden files and folders (names starting with ``.``: macOS's ``._x.wav``
    AppleDouble files, ``.ipynb_checkpoints``) are left out, as demonstration folders leave them.
    """
    wanted = suffixes or AUDIO_SUFFIXES
    out: list[Path] = []
    for item in items:
        if item == "-":
            out.extend(Path(line.strip()) for line in sys.stdin if line.strip())
            continue
        p = Path(item)
        if p.is_dir():
            files = [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in wanted]
            found = sorted(f for f in files if not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                hidden = f" (only hidden ones, which are skipped: {files[0].relative_to(p)})" if files else ""
                raise UsageError(f"{p}: folder holds no {'/'.join(sorted(wanted))} files{hidden}", "check the folder")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise UsageError("no inputs given", "pass files, folders, or - to read paths from stdin")
    return out


def probe_audio(path: str | Path, max_seconds: float | None = None, read: bool = False) -> None:
    """Check an input without decoding it for the model: it exists, is a non-empty file that
    soundfile can open, and is not longer than ``max_seconds``; with ``read``, also that it
    holds only finite samples and is not silent (reads the samples block by block, no
    resampling). Raises :class:`AudioError` as :func:`load_audio` would."""
    import soundfile as sf

    p = Path(path)
    _check_file(p)
    peak = 0.0
    finite = True
    try:
        info = sf.info(str(p))
        if read:
            with sf.SoundFile(str(p)) as f:
                size = max(int(BLOCK_SECONDS * f.samplerate), 1)
                for block in f.blocks(blocksize=size, dtype="float32", always_2d=True):
                    if len(block):
                        top = float(np.abs(block).max())
                        if not np.isfinite(top):
                            finite = False
                            break
                        peak = max(peak, top)
    except Exception as e:
        raise _unreadable(p, e) from e
    if not finite:
        raise AudioError(f"{p}: contains NaN or infinite samples", "re-export it")
    if info.frames == 0:
        raise AudioError(f"{p}: contains no samples", "re-export or remove it")
    err = _too_long(p, info.frames, info.samplerate, max_seconds)
    if err is not None:
        raise err
    if read and peak < SILENCE_PEAK:
        raise AudioError(f"{p}: is silent", "pass a clip with audible sound")


def check_inputs(paths: list[Path], probe: Callable[[Path], None] | None = None) -> None:
    """Refuse, before any model loads, a run none of whose inputs is usable.

    ``probe`` checks one input and raises :class:`UniaudioError` when it is bad (default: a
    non-empty file). A batch with some good inputs goes on, each bad one reported as it is
    reached; when every input is bad there is nothing to load a model for, and the first
    input's error is raised, the others' in its ``also``.
    """
    errors: list[UniaudioError] = []
    for p in paths:
        try:
            if probe is not None:
                probe(p)
            elif not p.exists():
                raise AudioError(f"{p}: no such file", "check the path")
            elif p.is_dir():
                raise AudioError(f"{p}: is a folder, expected a file", "pass the files inside it")
            elif p.stat().st_size == 0:
                raise AudioError(f"{p}: empty file (0 bytes)", "re-export or remove it")
            return
        except UniaudioError as e:
            errors.append(e)
    if errors:
        errors[0].also = errors[1:]
        raise errors[0]


def audio_probe(paths: list[Path], max_seconds: float | None) -> Callable[[Path], None]:
    """The :func:`check_inputs` probe for audio inputs: a full read (silence included) when
    there is one input, the header only for a batch (each file is read once, when processed)."""
    read = len(paths) == 1
    return lambda p: probe_audio(p, max_seconds, read=read)


def output_path_for(inp: Path, out_dir: Path, suffix: str) -> Path:
    """``<out_dir>/<input stem><suffix>``."""
    return out_dir / f"{inp.stem}{suffix}"
