"""Every command against bad input: the message, the exit code and the seconds until the error.

    python bench/bad_inputs.py [--markdown docs/bad_inputs.md]

Builds its fixtures (hostile folder names, empty/corrupt/silent/huge files, bad demo folders,
bad codes JSON, codes of another codec, a pickle with a payload) in a temporary folder and
runs the installed `uniaudio` on each case, with the default models. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


class Payload:
    """Unpickling this would run a shell command: the codec loader must never execute it."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/uniaudio-pwned",))


def tone(path: Path, seconds: float, freq: float = 440.0, channels: int = 1, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    sf.write(path, np.stack([wav] * channels, axis=1) if channels > 1 else wav, sr)
    return path


def fixtures(tmp: Path) -> dict[str, Path]:
    f: dict[str, Path] = {}
    digits = ROOT / "prompts" / "tts_digits"
    demos = tmp / "demos [ok]"
    for label in ("2", "7"):
        (demos / label).mkdir(parents=True)
        shutil.copy(sorted((digits / label).iterdir())[0], demos / label)
    f["demos"] = demos
    f["query"] = Path(shutil.copy(sorted((digits / "3").iterdir())[0], tmp / "query [3].flac"))
    one = tmp / "one_label"
    shutil.copytree(demos / "2", one / "2")
    f["one_label"] = one
    hollow = tmp / "hollow"
    shutil.copytree(demos, hollow)
    (hollow / "empty_label").mkdir()
    f["hollow"] = hollow
    nan_demos = tmp / "nan_demos"
    shutil.copytree(demos, nan_demos)
    nan = np.full(SR, 0.1, dtype=np.float32)
    nan[100] = np.nan
    sf.write(nan_demos / "7" / "nan.wav", nan, SR, subtype="FLOAT")
    f["nan_demos"] = nan_demos
    (tmp / "no_labels").mkdir()
    f["no_labels"] = tmp / "no_labels"
    f["empty"] = tmp / "empty.wav"
    f["empty"].write_bytes(b"")
    f["text"] = tmp / "notes.wav"
    f["text"].write_text("this is not audio\n")
    f["truncated"] = tmp / "truncated.wav"
    f["truncated"].write_bytes(tone(tmp / "full.wav", 1.0).read_bytes()[:30])
    f["silent"] = tmp / "silent.wav"
    sf.write(f["silent"], np.zeros(SR, dtype=np.float32), SR)
    f["huge"] = tmp / "eleven_minutes.flac"
    sf.write(f["huge"], np.zeros(SR * 660, dtype=np.int16), SR, subtype="PCM_16")
    f["long"] = tone(tmp / "three_minutes.wav", 180.0)
    for k in range(8):  # 16 x 10 s: more than SmolLM2's 8,192 tokens at 58 tokens/s
        for label in ("2", "7"):
            tone(tmp / "long_demos" / label / f"{k}.wav", 10.0)
    f["long_demos"] = tmp / "long_demos"
    f["mac"] = tmp / "from_a_mac"
    f["mac"].mkdir()
    (f["mac"] / "._clip.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    pairs = tmp / "pairs"
    tone(pairs / "u1" / "clean.wav", 1.0)
    tone(pairs / "u1" / "noisy.wav", 0.5, freq=450.0)
    f["pairs"] = pairs
    f["exists"] = tmp / "exists.wav"
    f["exists"].write_bytes(b"x")
    f["afile"] = tmp / "afile"
    f["afile"].write_text("a file")
    codes_dir = tmp / "codes"
    codes_dir.mkdir()
    f["bad_json"] = codes_dir / "broken.json"
    f["bad_json"].write_text('{"format": "uniaudio-codes", "version": 1, "codes": [[1, 2')
    f["no_version"] = codes_dir / "old.json"
    old = {"path": "x", "sample_rate": SR, "num_samples": 9600, "codes": [[1], [1], [1]]}
    f["no_version"].write_text(json.dumps(old))
    good = subprocess.run(
        [sys.executable, "-m", "uniaudio_cli", "encode", "--json", "--quiet", str(f["query"])],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    obj = json.loads(good)
    newer = dict(obj, version=99)
    f["newer"] = codes_dir / "newer.json"
    f["newer"].write_text(json.dumps(newer))
    other = dict(obj, codec=dict(obj["codec"], weights_sha256="0" * 64, source="/elsewhere/codec"))
    f["other_codec"] = codes_dir / "other_codec.json"
    f["other_codec"].write_text(json.dumps(other))
    out_of_range = dict(obj, codes=[obj["codes"][0], [10**7, *obj["codes"][1][1:]], obj["codes"][2]])
    f["out_of_range"] = codes_dir / "out_of_range.json"
    f["out_of_range"].write_text(json.dumps(out_of_range))
    f["evil"] = tmp / "evil.pth"
    with open(f["evil"], "wb") as fh:
        pickle.dump({"generator": Payload()}, fh)
    bad_codec = tmp / "bad_codec"
    bad_codec.mkdir()
    (bad_codec / "config.json").write_text("{not json")
    f["bad_codec"] = bad_codec
    f["md"] = tmp / "report.md"
    f["md"].write_text("old report")
    return f


def cases(f: dict[str, Path], tmp: Path) -> list[tuple[str, list[str]]]:
    d, q = str(f["demos"]), str(f["query"])
    return [
        ("demo folder with markup characters", ["classify", "--demos", "x/[/tmp]", q]),
        ("demo folder named [dog]", ["classify", "--demos", "x/[dog]", q]),
        ("demo folder without label folders", ["classify", "--demos", str(f["no_labels"]), q]),
        ("one label only", ["classify", "--demos", str(f["one_label"]), q]),
        ("an empty label folder", ["classify", "--demos", str(f["hollow"]), q]),
        ("unbalanced: --shots above a label's clips", ["classify", "--demos", d, "--shots", "3", q]),
        ("unknown --method", ["classify", "--demos", d, "--method", "knn", q]),
        ("unknown option", ["classify", "--demos", d, "--bogus", q]),
        ("missing query", ["classify", "--demos", d, str(tmp / "missing [1].wav")]),
        ("empty (0-byte) query", ["classify", "--demos", d, str(f["empty"])]),
        ("text file named .wav", ["classify", "--demos", d, str(f["text"])]),
        ("truncated WAV header", ["classify", "--demos", d, str(f["truncated"])]),
        ("silent query", ["classify", "--demos", d, str(f["silent"])]),
        ("11-minute query", ["classify", "--demos", d, str(f["huge"])]),
        ("empty text", ["tts", "", "-o", str(tmp / "x.wav")]),
        ("no output given", ["tts", "1+1"]),
        ("existing output, no --force", ["tts", "1+1", "-o", str(f["exists"])]),
        ("unwritable output folder", ["tts", "1+1", "-o", "/proc/uniaudio/two.wav"]),
        ("output format we cannot write", ["tts", "1+1", "-o", str(tmp / "two.mp3")]),
        ("output is a folder", ["tts", "1+1", "-o", str(tmp)]),
        ("--out-dir under /proc", ["denoise", q, "--out-dir", "/proc/nope"]),
        ("--out-dir is a file", ["denoise", q, "--out-dir", str(f["afile"])]),
        ("missing pair folder", ["denoise", q, "--demos", str(tmp / "nopairs"), "-o", str(tmp / "c.wav")]),
        ("-o with two inputs", ["denoise", q, q, "-o", str(tmp / "c.wav")]),
        ("codes JSON cut short", ["decode", str(f["bad_json"]), "-o", str(tmp / "d1.wav")]),
        ("codes JSON without a version", ["decode", str(f["no_version"]), "-o", str(tmp / "d2.wav")]),
        ("codes JSON of a newer version", ["decode", str(f["newer"]), "-o", str(tmp / "d3.wav")]),
        ("codes of another codec", ["decode", str(f["other_codec"]), "-o", str(tmp / "d4.wav")]),
        ("token id out of range", ["decode", str(f["out_of_range"]), "-o", str(tmp / "d5.wav")]),
        ("pickle with a payload as --codec", ["encode", "--codec", str(f["evil"]), q]),
        ("codec folder with a broken config.json", ["encode", "--codec", str(f["bad_codec"]), q]),
        ("missing codec", ["encode", "--codec", str(tmp / "no_codec"), q]),
        ("LLM not in the local cache", ["classify", "--demos", d, "--llm", "nobody/no-such-model", q]),
        ("existing --markdown", ["eval", "codec", q, "--markdown", str(f["md"])]),
        ("--pairs 0", ["denoise", q, "--pairs", "0", "-o", str(tmp / "c.wav")]),
        ("negative --crop", ["classify", "--demos", d, "--crop", "-1", q]),
        ("a demonstration clip with NaN samples", ["classify", "--demos", str(f["nan_demos"]), q]),
        ("-o - (stdout)", ["tts", "1+1", "-o", "-"]),
        ("every input of a batch bad (the last line)", ["encode", str(f["empty"]), str(f["text"])]),
        ("unknown --device", ["classify", "--demos", d, "--device", "gpu0", q]),
        ("--max-seconds -1", ["encode", "--max-seconds", "-1", q]),
        ("-o under a file", ["tts", "1+1", "-o", str(f["afile"] / "two.wav")]),
        (
            "a noisy demonstration shorter than its clean one",
            ["denoise", q, "--demos", str(f["pairs"]), "-o", str(tmp / "c.wav")],
        ),
        ("a query longer than the LLM's context", ["classify", "--demos", d, str(f["long"])]),
        (
            "a question longer than the LLM's context",
            ["tts", "what is one plus one? " * 3000, "-o", str(tmp / "t.wav")],
        ),
        (
            "a question that fits the LLM's context alone, not after the answer examples",
            ["tts", "what is" + " one" * 7800, "-o", str(tmp / "t.wav")],
        ),
        (
            "tts --mode paper: demonstrations too long for the LLM's context",
            [
                "tts",
                "1+1",
                "--mode",
                "paper",
                "--shots",
                "200",
                "--demos",
                str(f["long_demos"]),
                "-o",
                str(tmp / "t.wav"),
            ],
        ),
        (
            "denoise --mode paper: a prompt of pairs too long for the LLM's context",
            ["denoise", q, "--mode", "paper", "--pairs", "100", "--repeats", "3", "-o", str(tmp / "c.wav")],
        ),
        (
            "classify --method icl: demonstrations too long for the LLM's context",
            ["classify", "--demos", d, q, "--method", "icl", "--layers", "all", "--repeats", "300"],
        ),
        (
            "generate --seconds longer than the LLM's context",
            ["generate", "dog", "--demos", d, "--seconds", "600", "-o", str(tmp / "g.wav")],
        ),
        ("a query folder holding only macOS ._ files", ["classify", "--demos", d, str(f["mac"])]),
        ("train-codec --out is a file", ["train-codec", "--out", str(f["afile"]), "--data", d]),
        ("train-codec --resume with no run", ["train-codec", "--out", str(tmp / "run"), "--resume"]),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args()
    pwned = Path("/tmp/uniaudio-pwned")
    pwned.unlink(missing_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        f = fixtures(tmp)
        for name, argv in cases(f, tmp):
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "uniaudio_cli", *argv], capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            errors = [line for line in res.stderr.splitlines() if line.startswith("error:") or "Error" in line]
            message = (errors or res.stderr.strip().splitlines()[-1:] or ["(none)"])[
                -1 if "(the last line)" in name else 0
            ]
            traceback = "Traceback" in res.stderr
            rows.append((name, message.replace(t, "$TMP"), res.returncode, seconds, traceback))
    lines = [
        "| # | bad input | message (first error line unless said) | exit | s | traceback |",
        "|---|---|---|---|---|---|",
    ]
    for i, (name, msg, code, s, tb) in enumerate(rows, 1):
        msg = msg.replace("|", "\\|")
        lines.append(f"| {i} | {name} | {msg} | {code} | {s:.2f} | {'yes' if tb else 'no'} |")
    lines.append("")
    lines.append(f"pickle payload executed: {'YES' if pwned.exists() else 'no'}")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
