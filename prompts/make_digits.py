"""Make the shipped TTS demonstrations: spoken digits 0-9, five espeak-ng recordings each.

Writes ``prompts/tts_digits/<k>/<voice>_<i>.flac`` (16 kHz mono 16-bit FLAC, all exactly
``--seconds`` long, speech centred in zero padding, as the paper's equal-duration demonstrations)
and ``prompts/tts_digits/metadata.csv`` (path,label,seconds,voice,speed). The output depends only on
the installed espeak-ng, so re-running it reproduces the committed files.

    python prompts/make_digits.py
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

# Run as a plain script from the repository root: make the package importable without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uniaudio_cli.audio import write_audio
from uniaudio_cli.synth import synthesize_fixed

SAMPLE_RATE = 16000
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Recording i of every digit uses the same (voice, speed, pitch): five clear, distinct speakers
# (male/female, US/British accents) so demonstrations vary in voice but not in what is said.
RECORDINGS: tuple[tuple[str, int, int], ...] = (
    ("en-us", 150, 50),
    ("en-us+f2", 160, 55),
    ("en-gb+m3", 140, 45),
    ("en-gb-x-rp+f4", 170, 50),
    ("en-us+klatt2", 155, 40),
)
PEAK = 0.7  # common level, well clear of clipping


def make_digits(out_dir: Path, seconds: float = 0.6) -> Path:
    """Write the digit demonstrations into ``out_dir``; return the metadata path."""
    rows: list[dict[str, object]] = []
    wanted: set[Path] = set()
    for k, word in enumerate(DIGITS):
        for i, (voice, speed, pitch) in enumerate(RECORDINGS):
            wav, used_speed = synthesize_fixed(word, seconds, voice, speed, pitch, SAMPLE_RATE)
            wav = wav * np.float32(PEAK / float(np.abs(wav).max()))
            rel = Path(str(k)) / f"{voice}_{i}.flac"
            write_audio(out_dir / rel, wav, SAMPLE_RATE, force=True)
            wanted.add(out_dir / rel)
            rows.append(
                {"path": rel.as_posix(), "label": k, "seconds": round(len(wav) / SAMPLE_RATE, 3), "voice": voice,
                 "speed": used_speed}
            )  # fmt: skip
    # Drop clips from an earlier run with other settings so the folder matches metadata.csv.
    for stale in out_dir.glob("[0-9]/*.flac"):
        if stale not in wanted:
            stale.unlink()
    meta = out_dir / "metadata.csv"
    with meta.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("path", "label", "seconds", "voice", "speed"), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return meta


def main() -> None:
    """Parse arguments, write the files, print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "tts_digits")
    parser.add_argument("--seconds", type=float, default=0.6, help="length of every clip (default 0.6)")
    args = parser.parse_args()
    meta = make_digits(args.out, args.seconds)
    size = sum(p.stat().st_size for p in args.out.rglob("*.flac"))
    print(f"wrote {len(DIGITS) * len(RECORDINGS)} clips of {args.seconds:g} s ({size / 1024:.0f} KiB) and {meta}")


if __name__ == "__main__":
    main()
