"""Run the README's Python API example as a script, with the real default models.

    python bench/readme_api.py [--data ../shared/data]

The example's file names are filled with clips kept out of codec training (ESC-10 fold 3 dogs
and rain; a LibriSpeech test-other excerpt mixed with noise at 5 dB), in a temporary folder.
Prints what the example prints and how long it took.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def example_code() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def rows(data: Path, name: str) -> list[dict[str, str]]:
    with open(data / name / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def read(path: Path, seconds: float | None = None) -> np.ndarray:
    wav, sr = sf.read(path, dtype="float32")
    assert sr == SR
    return wav[: int(seconds * SR)] if seconds else wav


def setup(data: Path, tmp: Path) -> None:
    esc = [r for r in rows(data, "esc10") if r["fold"] == "3"]
    dogs = [data / "esc10" / r["path"] for r in esc if r["label"] == "dog_bark"]
    rain = [data / "esc10" / r["path"] for r in esc if r["label"] == "rain"]
    (tmp / "demos" / "dog").mkdir(parents=True)
    (tmp / "demos" / "rain").mkdir(parents=True)
    for i in range(2):
        os.symlink(dogs[i], tmp / "demos" / "dog" / dogs[i].name)
        os.symlink(rain[i], tmp / "demos" / "rain" / rain[i].name)
    os.symlink(dogs[2], tmp / "query1.wav")
    sf.write(tmp / "query2.flac", read(rain[2]), SR)
    os.symlink(dogs[3], tmp / "query3.wav")
    os.symlink(dogs[0], tmp / "dog1.wav")
    os.symlink(rain[0], tmp / "rain1.wav")
    speech = next(data / "librispeech" / r["path"] for r in rows(data, "librispeech") if r["split"].isdigit())
    clean = read(speech, 3.0)
    noise = read(next((data / "noise").rglob("running_tap*.flac")), 3.0)[: len(clean)]
    gain = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (5 / 10)))
    sf.write(tmp / "noisy.wav", np.clip(clean + gain * noise, -1, 1), SR)
    sf.write(tmp / "clip.wav", clean, SR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        setup(args.data, tmp)
        os.chdir(tmp)
        t0 = time.perf_counter()
        exec(compile(example_code(), "README.md", "exec"), {})
        print(f"README example ran in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
