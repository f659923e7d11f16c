"""Accuracy of the default TTS mode's text step (the LLM picks the digit that answers the
question, before any audio is written), before and after the ensemble and calibration, and what
its warning threshold catches.

    OMP_NUM_THREADS=1 nice -n 19 python bench/tts_text.py [--sets paper arithmetic reasoning multistep]
        [--orderings 4] [--no-calibrate] [--max-examples N] [--template T] [--examples E]
        [--thresholds 0.3 0.4] [--json out.json]

Sets: ``paper`` is the paper's 20 questions (``uniaudio eval tts``); the others are
``prompts/tts_questions/<set>.json`` (``dev`` and ``dev_unanswerable`` are the tuning sets).
Configurations: ``before`` is the previous text step (the first 12 examples in file order, one
prompt, no calibration); ``after`` is ``TTSOptions``' defaults unless the flags above change it
(``--template``: a template name in ``prompts/`` or a JSON file, e.g. the variants in
``bench/tts_templates/``; ``--examples``: the text examples, a name in ``prompts/`` or a JSON file
with their ``examples`` and ``content_free`` lists).
Unanswerable texts (``--unanswerable``: not questions, or answers that are not one digit) count as
caught when the ``after`` answer gets a warning at the threshold (default: the shipped one).
Runs in one process on one thread; prints Markdown tables with Wilson 95 % intervals.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from uniaudio_cli.api import load_models
from uniaudio_cli.evaluate.store import wilson_interval
from uniaudio_cli.evaluate.tts_eval import QUESTIONS
from uniaudio_cli.prompts import PromptTemplate, prompts_dir
from uniaudio_cli.tasks.demos import load_demo_folder
from uniaudio_cli.tasks.tts import AnswerExamples, TextAnswerer, TTSOptions, default_tts_demos

BEFORE_EXAMPLES = 12  # the example list before the ensemble: the file's first 12


def load_set(name: str) -> list[tuple[str, str | None]]:
    """``(question, answer)`` of a question set; the answer is ``None`` for a text that asks nothing."""
    if name == "paper":
        return list(QUESTIONS)
    data = json.loads((prompts_dir() / "tts_questions" / f"{name}.json").read_text())
    return [(q["question"], q["answer"]) for q in data["questions"]]


def fmt_acc(right: int, n: int) -> str:
    lo, hi = wilson_interval(right, n) or (0.0, 0.0)
    return f"{right}/{n} = {right / n:.0%} [{lo:.0%}, {hi:.0%}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["paper", "arithmetic", "reasoning", "multistep"])
    ap.add_argument("--unanswerable", nargs="*", default=["unanswerable"])
    ap.add_argument("--configs", nargs="+", default=["before", "after"], choices=["before", "after"])
    opts = TTSOptions()
    ap.add_argument("--orderings", type=int, default=opts.answer_orderings, help="after: prompts in the ensemble")
    ap.add_argument("--no-calibrate", action="store_true", help="after: no contextual calibration")
    ap.add_argument("--max-examples", type=int, default=None, help="after: only the file's first N examples")
    ap.add_argument("--template", default=opts.answer_template, help="after: prompt template (name or JSON file)")
    ap.add_argument("--examples", default=opts.answer_examples, help="after: text examples (name or JSON file)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[opts.min_answer_probability])
    ap.add_argument("--complete", type=float, nargs="+", default=[opts.min_answer_complete])
    ap.add_argument("--json", type=Path, default=None, help="write every answer and its probabilities here")
    ap.add_argument("--llm", default=None)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    llm = load_models(args.llm, device=args.device).llm
    texts = sorted(load_demo_folder(default_tts_demos()).clips)
    templates = {"before": PromptTemplate.load(opts.answer_template), "after": PromptTemplate.load(args.template)}
    examples = AnswerExamples.load(opts.answer_examples)
    after_examples = AnswerExamples.load(args.examples)
    configs = {
        "before": dict(examples=AnswerExamples(examples.examples[:BEFORE_EXAMPLES]), orderings=1, calibrate=False),
        "after": dict(
            examples=AnswerExamples(after_examples.examples[: args.max_examples], after_examples.content_free),
            orderings=args.orderings,
            calibrate=not args.no_calibrate,
        ),
    }
    sets = {name: load_set(name) for name in [*args.sets, *args.unanswerable]}
    records: list[dict] = []
    timing: dict[str, tuple[float, float]] = {}
    for config in args.configs:
        t0 = time.perf_counter()
        answerer = TextAnswerer(llm, texts, templates[config], **configs[config])  # type: ignore[arg-type]
        startup = time.perf_counter() - t0
        t0, n = time.perf_counter(), 0
        for name, questions in sets.items():
            if config == "before" and name in args.unanswerable:
                continue
            for question, truth in questions:
                reply = answerer(question)
                n += 1
                records.append({"config": config, "set": name, "question": question, "truth": truth, **asdict(reply)})
        timing[config] = (startup, (time.perf_counter() - t0) / max(n, 1))

    print("| set | questions | " + " | ".join(f"{c}: accuracy [95 % Wilson]" for c in args.configs) + " |")
    print("|---|---|" + "---|" * len(args.configs))
    for name in args.sets:
        cells = []
        for config in args.configs:
            rows = [r for r in records if r["config"] == config and r["set"] == name]
            cells.append(fmt_acc(sum(r["answer"] == r["truth"] for r in rows), len(rows)))
        print(f"| {name} | {len(sets[name])} | " + " | ".join(cells) + " |")
    print()
    for config in args.configs:
        startup, per_q = timing[config]
        print(f"{config}: prompts built in {startup:.1f} s, {per_q:.2f} s per question")
    if "after" in args.configs:
        print()
        print("| min probability | min complete | set | warned (right / wrong answers) | not warned: accuracy |")
        print("|---|---|---|---|---|")
        for thr, end in itertools.product(args.thresholds, args.complete):
            for name in sets:
                rows = [r for r in records if r["config"] == "after" and r["set"] == name]
                unsure = [r["probability"] < thr or (r["complete"] or 1.0) < end for r in rows]
                warned = [r for r, u in zip(rows, unsure, strict=True) if u]
                kept = [r for r, u in zip(rows, unsure, strict=True) if not u]
                head = f"| {thr:.2f} | {end:.2f} | {name} |"
                if name in args.unanswerable:
                    print(f"{head} caught {len(warned)}/{len(rows)} | - |")
                    continue
                right = sum(r["answer"] == r["truth"] for r in warned)
                kept_acc = fmt_acc(sum(r["answer"] == r["truth"] for r in kept), len(kept)) if kept else "-"
                print(f"{head} {len(warned)}/{len(rows)} ({right} / {len(warned) - right}) | {kept_acc} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "records": records}, indent=1))


if __name__ == "__main__":
    main()
