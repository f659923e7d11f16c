"""Classical speech codecs on the codec's held-out clips: what PESQ-WB and STOI a codec of about
the LLM-Codec's bit rate (Codec 2 at 1,200 bit/s; ours writes at most 875) and of several times it
(Codec 2 at 3,200, Opus at 6 and 9 kbit/s) reach on the same recordings, scored as
``uniaudio eval codec`` scores (``pesq_wb``, ``stoi_score``).

    python bench/reference_codecs.py [--sets fsdd librispeech] [--max-files N] [--codecs ...]

Needs the Debian packages ``codec2`` (``c2enc``, ``c2dec``) and ``opus-tools`` (``opusenc``,
``opusdec``); Codec 2 is narrowband, so its clips go through 8 kHz and back. Prints one Markdown
row per set and codec: mean PESQ-WB (on the clips long enough for it), mean STOI (likewise), and
how many clips each mean covers. Nothing here is part of uniaudio; it is a yardstick for the
model card.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from uniaudio_cli.audio import load_audio
from uniaudio_cli.evaluate.codec_eval import pesq_wb, spread, stoi_score

ROOT = Path(__file__).resolve().parents[1]
SETS = {"librispeech": ROOT / ".data/heldout/speech/librispeech", "fsdd": ROOT / ".data/heldout/speech/fsdd"}
SR = 16000
# name -> (tool, setting): Codec 2 modes are bit rates; Opus bit rates are kbit/s.
CODECS = {
    "codec2-1200": ("codec2", "1200"),
    "codec2-3200": ("codec2", "3200"),
    "opus-6k": ("opus", "6"),
    "opus-9k": ("opus", "9"),
}
TOOLS = {"codec2": ("c2enc", "c2dec"), "opus": ("opusenc", "opusdec")}


def run_codec2(wav: np.ndarray, mode: str, tmp: Path) -> np.ndarray:
    """``(T,)`` at 16 kHz -> Codec 2 at ``mode`` bit/s (through 8 kHz) -> ``(T,)`` at 16 kHz."""
    import librosa

    narrow = librosa.resample(wav, orig_sr=SR, target_sr=8000)
    raw, bits, out = tmp / "in.raw", tmp / "c2.bit", tmp / "out.raw"
    np.clip(narrow * 32768, -32768, 32767).astype("<i2").tofile(raw)
    subprocess.run(["c2enc", mode, str(raw), str(bits)], check=True, capture_output=True)
    subprocess.run(["c2dec", mode, str(bits), str(out)], check=True, capture_output=True)
    back = np.fromfile(out, dtype="<i2").astype(np.float32) / 32768
    return librosa.resample(back, orig_sr=8000, target_sr=SR)


def run_opus(wav: np.ndarray, kbps: str, tmp: Path) -> np.ndarray:
    """``(T,)`` at 16 kHz -> Opus at ``kbps`` kbit/s (voice tuning) -> ``(T,)`` at 16 kHz."""
    src, enc, out = tmp / "in.wav", tmp / "x.opus", tmp / "out.wav"
    sf.write(src, wav, SR, subtype="PCM_16")
    subprocess.run(
        ["opusenc", "--quiet", "--bitrate", kbps, "--speech", str(src), str(enc)], check=True, capture_output=True
    )
    subprocess.run(["opusdec", "--quiet", "--rate", str(SR), str(enc), str(out)], check=True, capture_output=True)
    return sf.read(out, dtype="float32")[0]


def align(ref: np.ndarray, deg: np.ndarray, max_lag: int = 800) -> np.ndarray:
    """``deg`` shifted by the lag (up to ``max_lag`` samples) that best matches ``ref``, cut or
    zero-padded to ``ref``'s length: the codecs add a delay that ``uniaudio eval codec``'s own
    output does not have, and PESQ forgives it while STOI does not."""
    n = len(ref)
    padded = np.concatenate([deg, np.zeros(max_lag + max(n - len(deg), 0), np.float32)])
    best = max(range(max_lag + 1), key=lambda k: float(np.dot(ref, padded[k : k + n])))
    out = padded[best : best + n]
    return np.pad(out, (0, n - len(out)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--codecs", nargs="+", default=list(CODECS), choices=list(CODECS))
    ap.add_argument("--max-files", type=int, default=None, help="clips evenly spaced through each set")
    args = ap.parse_args()
    missing = sorted({t for c in args.codecs for t in TOOLS[CODECS[c][0]] if shutil.which(t) is None})
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install codec2 opus-tools")
    print("| set | codec | PESQ-WB (clips) | STOI (clips) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.sets:
            files = spread(sorted(SETS[name].rglob("*.flac")), args.max_files)
            if not files:
                raise SystemExit(f"{SETS[name]}: no clips; run python bench/heldout.py")
            clips = [load_audio(f, SR) for f in files]
            for codec in args.codecs:
                tool, setting = CODECS[codec]
                pesq, stoi = [], []
                for wav in clips:
                    out = run_codec2(wav, setting, tmp) if tool == "codec2" else run_opus(wav, setting, tmp)
                    out = align(wav, out.astype(np.float32))
                    p, s = pesq_wb(wav, out, SR), stoi_score(wav, out, SR)
                    if p is not None:
                        pesq.append(p)
                    if s is not None:
                        stoi.append(s)
                print(
                    f"| {name} | {codec} | {np.mean(pesq):.3f} ({len(pesq)}) | {np.mean(stoi):.3f} ({len(stoi)}) |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
