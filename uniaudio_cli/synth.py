"""Speech synthesis with the espeak-ng command line tool.

Used to make training speech and the project's shipped demonstration audio, so that nothing
committed depends on third-party recordings. espeak-ng output is deterministic for a given
espeak-ng build, which keeps the generated data reproducible.
"""

from __future__ import annotations

import functools
import io
import shutil
import struct
import subprocess

import numpy as np

from uniaudio_cli.errors import AudioError, UniaudioError, UsageError

ESPEAK = "espeak-ng"
INSTALL_FIX = "install espeak-ng (Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng)"

# English accents built into espeak-ng (the MBROLA "mb-*" voices need extra packages, so they are left out).
ENGLISH_ACCENTS: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)

# Voice variants (``voices/!v`` files) that still sound like ordinary speech. Left out on purpose:
# whispering (whisper, whisperf, caleb), robots and effects (robosoft*, UniRobot, anikaRobot,
# Demonic, croak, Tweaky, Storm, announcer) and the speed-test voice (fast).
ENGLISH_VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4",
    "Alicia", "Annie", "Andrea", "aunty", "belinda", "linda", "steph", "grandma", "anika",
    "adam", "Alex", "benjamin", "david", "edward", "Gene", "iven", "john", "max", "Mike",
    "Michael", "norbert", "paul", "quincy", "rob", "robert", "travis", "grandpa", "Denis",
)  # fmt: skip

# Good English voices: every accent on its own, then each variant on an accent chosen round-robin,
# so accents and variants are both spread out (53 voices).
ENGLISH_VOICES: tuple[str, ...] = ENGLISH_ACCENTS + tuple(
    f"{ENGLISH_ACCENTS[i % len(ENGLISH_ACCENTS)]}+{v}" for i, v in enumerate(ENGLISH_VARIANTS)
)

# espeak-ng writes 22.05 kHz; anything outside these ranges is rejected or clamped by espeak-ng itself.
SPEED_RANGE = (80, 450)  # words per minute
PITCH_RANGE = (0, 99)
KEEP_SILENCE_S = 0.05  # silence kept (or zero-padded) at each end after trimming
TRIM_TOP_DB = 40.0  # frames this far below the loudest frame count as silence


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` executable is on ``PATH``."""
    return shutil.which(ESPEAK) is not None


def _require_espeak() -> str:
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise UniaudioError(f"{ESPEAK} not found on PATH (needed to synthesise speech)", INSTALL_FIX)
    return exe


@functools.cache
def available_variants() -> frozenset[str]:
    """Names usable after ``+`` in a voice (espeak-ng falls back silently on unknown ones, so check first)."""
    out = subprocess.run([_require_espeak(), "--voices=variant"], capture_output=True, text=True, check=False)
    names = set()
    for line in out.stdout.splitlines()[1:]:
        # The last column is the file, "!v/<name>"; the display name (column 4) can differ from it.
        idx = line.find("!v/")
        if idx >= 0:
            names.add(line[idx + 3 :].strip())
    return frozenset(names)


def _fix_stream_header(data: bytes) -> bytes:
    """Set the RIFF and data chunk sizes: on a pipe espeak-ng cannot seek back and leaves placeholders."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    buf = bytearray(data)
    struct.pack_into("<I", buf, 4, len(buf) - 8)
    pos = 12
    while pos + 8 <= len(buf):
        chunk_id = bytes(buf[pos : pos + 4])
        if chunk_id == b"data":
            struct.pack_into("<I", buf, pos + 4, len(buf) - pos - 8)
            break
        (size,) = struct.unpack_from("<I", buf, pos + 4)
        pos += 8 + size + (size & 1)
    return bytes(buf)


def trim_silence(
    wav: np.ndarray, sample_rate: int, keep_s: float = KEEP_SILENCE_S, top_db: float = TRIM_TOP_DB
) -> np.ndarray:
    """Cut leading/trailing silence, leaving exactly ``keep_s`` seconds at each end (zero-padded if short)."""
    import librosa

    keep = round(keep_s * sample_rate)
    _, (start, end) = librosa.effects.trim(wav, top_db=top_db, frame_length=512, hop_length=128)
    if end <= start:
        return np.zeros(2 * keep, dtype=np.float32)
    lo, hi = max(start - keep, 0), min(end + keep, len(wav))
    out = wav[lo:hi]
    # Pad with zeros where the source had less silence than ``keep`` so every clip has the same margins.
    out = np.pad(out, (keep - (start - lo), keep - (hi - end)))
    return np.ascontiguousarray(out, dtype=np.float32)


def synthesize(
    text: str,
    voice: str = "en-us",
    speed: int = 160,
    pitch: int = 50,
    sample_rate: int = 16000,
) -> np.ndarray:
    """Speak ``text`` with espeak-ng; return float32 mono ``(T,)`` audio at ``sample_rate``.

    ``voice`` is an espeak-ng voice, optionally with a variant (``"en-us+m3"``); ``speed`` is in
    words per minute, ``pitch`` in 0..99. Silence at both ends is trimmed to about 50 ms.
    Raises :class:`UniaudioError` when espeak-ng is missing, :class:`UsageError` for an unknown
    voice or out-of-range options, :class:`AudioError` when espeak-ng produced nothing audible.
    """
    import librosa
    import soundfile as sf

    exe = _require_espeak()
    if not text.strip():
        raise UsageError("nothing to synthesise: empty text", "pass some words")
    if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
        raise UsageError(f"speed {speed} out of range {SPEED_RANGE}", "use words per minute, e.g. 160")
    if not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
        raise UsageError(f"pitch {pitch} out of range {PITCH_RANGE}", "use 0..99, e.g. 50")
    if "+" in voice and voice.split("+", 1)[1] not in available_variants():
        raise UsageError(f"unknown espeak-ng voice variant in {voice!r}", "list them with: espeak-ng --voices=variant")

    # Text goes through stdin so that words starting with "-" are never read as options.
    cmd = [exe, "--stdout", "--stdin", "-v", voice, "-s", str(speed), "-p", str(pitch)]
    proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False)
    err = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0 or not proc.stdout:
        if "voice does not exist" in err:
            raise UsageError(f"unknown espeak-ng voice {voice!r}", "list them with: espeak-ng --voices=en")
        raise UniaudioError(f"{ESPEAK} failed (exit {proc.returncode}): {err or 'no output'}", INSTALL_FIX)

    data, sr = sf.read(io.BytesIO(_fix_stream_header(proc.stdout)), dtype="float32", always_2d=True)
    wav = data.mean(axis=1)
    if sr != sample_rate:
        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    if wav.size == 0 or float(np.abs(wav).max()) < 1e-4:
        raise AudioError(f"{ESPEAK} produced silence for {text!r} with voice {voice!r}", "try other text or voice")
    return trim_silence(wav.astype(np.float32), sample_rate)


def synthesize_fixed(
    text: str,
    seconds: float,
    voice: str = "en-us",
    speed: int = 160,
    pitch: int = 50,
    sample_rate: int = 16000,
    margin_s: float = 0.02,
    speed_step: int = 10,
) -> tuple[np.ndarray, int]:
    """Speak ``text`` into exactly ``seconds`` of audio, speech centred between zero padding.

    Equal-length clips are what the paper's in-context TTS demonstrations use. Rather than
    cropping (which cuts words) or time-stretching (which adds artefacts), an utterance that does
    not fit is re-synthesised ``speed_step`` words per minute faster until it does. Returns the
    audio and the speed actually used; raises :class:`UsageError` if no speed up to the maximum fits.
    """
    target = round(seconds * sample_rate)
    for s in range(speed, SPEED_RANGE[1] + 1, speed_step):
        wav = trim_silence(synthesize(text, voice, s, pitch, sample_rate), sample_rate, keep_s=margin_s)
        if len(wav) <= target:
            left = (target - len(wav)) // 2
            return np.pad(wav, (left, target - len(wav) - left)).astype(np.float32), s
    raise UsageError(f"{text!r} does not fit in {seconds:g} s even at {SPEED_RANGE[1]} wpm", "allow more time")
