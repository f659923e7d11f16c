"""How many of the shipped tts digit clips are still heard as their digit after a codec's
encode + decode, judged by the offline digit recogniser of `uniaudio eval tts` (pocketsphinx,
grammar: one of zero..nine).

The default tts mode speaks a codec copy of one of these clips, so this bounds its spoken
accuracy per answer; 50 clips judge a codec more steadily than the 20 questions do.

    OMP_NUM_THREADS=1 python bench/codec_digits.py raw checkpoints/llm-codec-smollm2 [more codecs]

``raw`` judges the clips themselves (the recogniser's own error on espeak-ng voices).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec.api import load_codec
from uniaudio_cli.evaluate.tts_eval import DigitRecogniser
from uniaudio_cli.llm import load_vocabulary
from uniaudio_cli.tasks.tts import default_tts_demos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("codecs", nargs="+", help="codec folders, or raw")
    ap.add_argument("--demos", type=Path, default=None, help="default: the shipped digits")
    args = ap.parse_args()
    torch.set_num_threads(1)
    recognise = DigitRecogniser()
    clips = sorted((args.demos or default_tts_demos()).glob("*/*.flac"))
    vocab = None
    print("| audio | heard right | misheard (clip -> digit heard) |\n|---|---|---|")
    for name in args.codecs:
        codec = None
        if name != "raw":
            vocab = vocab or load_vocabulary(None, full_tokenizer=False)
            codec = load_codec(name, vocabulary=vocab, device="cpu")
        right, wrong = 0, []
        for path in clips:
            wav = load_audio(path, 16000)
            heard = recognise(wav if codec is None else codec.decode(codec.encode(wav)), 16000)
            if heard == path.parent.name:
                right += 1
            else:
                wrong.append(f"{path.parent.name}/{path.stem} -> {heard}")
        print(f"| {name} | {right}/{len(clips)} | {', '.join(wrong)} |", flush=True)


if __name__ == "__main__":
    main()
