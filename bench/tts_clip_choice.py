"""Which demonstration clip should the default tts mode speak? Criteria compared on development
voices, never on the shipped clips.

The default mode speaks a codec copy of one demonstration clip of the answer. A codec can bend
one clip towards another word, so the choice of clip decides whether the answer is heard right.
This script builds development digit sets with espeak-ng voices that the shipped
``prompts/tts_digits`` do not use (each set: 10 digits x 5 voices, as the shipped set), makes
every clip's codec copy with each codec, and asks the offline judge of ``uniaudio eval tts``
(pocketsphinx, one of zero..nine) which digit each copy says. Each criterion then picks one clip
per digit from what the synthesizer itself has at hand (the originals and their copies), and
the table counts the picks heard right.

    python bench/tts_clip_choice.py checkpoints/llm-codec-smollm2 [more codecs] --sets 4

Criteria:
  first      the first clip of each digit (no choice)
  atypical   the copy closest (MFCC DTW) to the digit's other originals
  fidelity   the copy closest to its own original
  margin     the copy whose distance to the digit's other originals is smallest against its
             distance to the nearest other digit's originals (a nearest-centroid margin)
"""

from __future__ import annotations

import argparse
import csv
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.codec.api import load_codec
from uniaudio_cli.evaluate.tts_eval import DIGIT_WORDS, SAMPLE_RATE, DigitRecogniser
from uniaudio_cli.features import dtw_cost
from uniaudio_cli.llm import load_vocabulary
from uniaudio_cli.synth import ENGLISH_VOICES, synthesize_fixed
from uniaudio_cli.tasks.tts import _mfcc, copy_atypicality, default_tts_demos

PER_DIGIT = 5


def shipped_voices() -> set[str]:
    """The espeak-ng voices of the shipped digits, as their ``metadata.csv`` lists them."""
    with (default_tts_demos() / "metadata.csv").open(newline="") as f:
        return {row["voice"] for row in csv.DictReader(f)}


def dev_sets(n_sets: int, seed: int) -> list[list[tuple[str, int, int]]]:
    """``n_sets`` disjoint lists of five (voice, speed, pitch) recordings, none of the shipped voices."""
    rng = random.Random(seed)
    shipped = shipped_voices()
    voices = [v for v in ENGLISH_VOICES if v not in shipped]
    rng.shuffle(voices)
    if n_sets * PER_DIGIT > len(voices):
        raise SystemExit(f"at most {len(voices) // PER_DIGIT} sets")
    return [
        [
            (v, rng.randrange(140, 190, 10), rng.randrange(40, 60, 5))
            for v in voices[i * PER_DIGIT : (i + 1) * PER_DIGIT]
        ]
        for i in range(n_sets)
    ]


def make_set(recordings: Sequence[tuple[str, int, int]]) -> list[list[np.ndarray]]:
    """``clips[d][i]``: digit ``d`` spoken by recording ``i``, 0.6 s, peak 0.7 (as the shipped set)."""
    out = []
    for word in DIGIT_WORDS:
        row = []
        for voice, speed, pitch in recordings:
            wav, _ = synthesize_fixed(word, 0.6, voice, speed, pitch, SAMPLE_RATE)
            row.append(wav * np.float32(0.7 / float(np.abs(wav).max())))
        out.append(row)
    return out


Clips = list[list[np.ndarray]]
# A criterion sees digit ``d``, every original and copy of the set, and the originals' MFCCs
# (computed once per set), and returns the index of the clip it speaks.
Criterion = Callable[[int, Clips, Clips, Clips], int]


def first(d: int, originals: Clips, copies: Clips, fo: Clips) -> int:
    return 0


def atypical(d: int, originals: Clips, copies: Clips, fo: Clips) -> int:
    return int(np.argmin(copy_atypicality(originals[d], copies[d], SAMPLE_RATE)))


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return dtw_cost(a, b) / (a.shape[1] + b.shape[1])


def fidelity(d: int, originals: Clips, copies: Clips, fo: Clips) -> int:
    pairs = zip(copies[d], fo[d], strict=True)
    return int(np.argmin([_dist(_mfcc(c, SAMPLE_RATE), o) for c, o in pairs]))


def margin(d: int, originals: Clips, copies: Clips, fo: Clips) -> int:
    scores = []
    for i, c in enumerate(copies[d]):
        fc = _mfcc(c, SAMPLE_RATE)
        same = np.mean([_dist(fc, o) for j, o in enumerate(fo[d]) if j != i])
        other = min(np.mean([_dist(fc, o) for o in fo[e]]) for e in range(len(fo)) if e != d)
        scores.append(same - other)
    return int(np.argmin(scores))


CRITERIA: dict[str, Criterion] = {"first": first, "atypical": atypical, "fidelity": fidelity, "margin": margin}
# "any": a digit counts when at least one of its copies is heard right, the most a choice can reach.


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("codecs", nargs="+", help="codec folders")
    ap.add_argument("--sets", type=int, default=4, help="development sets of five voices (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    recognise = DigitRecogniser()
    sets = [make_set(r) for r in dev_sets(args.sets, args.seed)]
    feats = [[[_mfcc(x, SAMPLE_RATE) for x in row] for row in s] for s in sets]
    raw = sum(recognise(x, SAMPLE_RATE) == str(d) for s in sets for d, row in enumerate(s) for x in row)
    n_clips = args.sets * len(DIGIT_WORDS) * PER_DIGIT
    print(f"development clips heard right as they are: {raw}/{n_clips}")
    print("| codec | copies heard right | " + " | ".join(CRITERIA) + " | any |")
    print("|---|---|" + "---|" * (len(CRITERIA) + 1))
    vocab = load_vocabulary(None, full_tokenizer=False)
    for name in args.codecs:
        codec = load_codec(Path(name), vocabulary=vocab, device="cpu")
        right_copies = 0
        picked = dict.fromkeys(CRITERIA, 0)
        reachable = 0
        for originals, fo in zip(sets, feats, strict=True):
            copies = [[codec.decode(codec.encode(x))[: len(x)] for x in row] for row in originals]
            heard = [[recognise(c, SAMPLE_RATE) == str(d) for c in row] for d, row in enumerate(copies)]
            right_copies += sum(map(sum, heard))
            reachable += sum(map(any, heard))
            for key, crit in CRITERIA.items():
                picked[key] += sum(heard[d][crit(d, originals, copies, fo)] for d in range(len(DIGIT_WORDS)))
        n_picks = args.sets * len(DIGIT_WORDS)
        cells = " | ".join(f"{picked[k]}/{n_picks}" for k in CRITERIA)
        print(f"| {name} | {right_copies}/{n_clips} | {cells} | {reachable}/{n_picks} |", flush=True)


if __name__ == "__main__":
    main()
