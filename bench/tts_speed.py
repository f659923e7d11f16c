"""Where `uniaudio tts` spends its time once the models are loaded: the one-off set-up (encoding
the digit demonstrations, the audio prompt's cache, the text step's prompt caches and their
calibration) and, per question, the text step (the LLM picks the answer), the audio step (the
LLM picks which of the answer's demonstration clips to copy) and the codec's decoding.

    OMP_NUM_THREADS=1 python bench/tts_speed.py [--threads 1] [--questions 20] [--json out.json]

The questions are the paper's 20 (``uniaudio eval tts``), default mode, shipped demonstrations.
Prints a Markdown table; the answers are printed too, so that a speed-up can be checked to
leave them unchanged.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from uniaudio_cli.api import load_models
from uniaudio_cli.evaluate.tts_eval import QUESTIONS
from uniaudio_cli.tasks.demos import load_demo_folder
from uniaudio_cli.tasks.tts import Synthesizer, TTSOptions, default_tts_demos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--questions", type=int, default=len(QUESTIONS))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    models = load_models(device="cpu")
    load_s = time.perf_counter() - t0
    opts = TTSOptions()
    demos = load_demo_folder(default_tts_demos()).clips  # as `uniaudio tts`: the first `shots` per text
    t0 = time.perf_counter()
    synth = Synthesizer.from_files(models.llm, models.codec, demos, opts)
    setup_s = time.perf_counter() - t0

    text_s, speak_s, decode_s, answers = [], [], [], []
    for question, _ in QUESTIONS[: args.questions]:
        t0 = time.perf_counter()
        synth.answer(question)
        text_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        speech = synth.speak(question)
        speak_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        models.codec.decode(speech.tokens)
        decode_s.append(time.perf_counter() - t0)
        answers.append({"question": question, "answer": speech.answer, "follows": speech.follows})

    audio_s = [max(s - t - d, 0.0) for s, t, d in zip(speak_s, text_s, decode_s, strict=True)]
    rows = [
        ("models loaded", load_s),
        ("set-up (encode demonstrations, prompt caches, calibration)", setup_s),
        ("per question: text step", statistics.mean(text_s)),
        ("per question: audio step (choose the clip)", statistics.mean(audio_s)),
        ("per question: codec decode", statistics.mean(decode_s)),
        ("per question: speak() in all", statistics.mean(speak_s)),
    ]
    print(f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{len(answers)} questions, {len(synth.demos)} demonstrations\n")
    print("| stage | seconds |\n|---|---|")
    for name, s in rows:
        print(f"| {name} | {s:.2f} |")
    print()
    for a in answers:
        print(f"{a['question']!r} -> {a['answer']} ({a['follows']})")
    if args.json:
        args.json.write_text(json.dumps({"rows": dict(rows), "answers": answers}, indent=1))


if __name__ == "__main__":
    main()
