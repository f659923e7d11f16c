"""Write ``docs/results.md``: the paper's tables reproduced with the default models, with
baselines, timings, and the paper's figures beside ours.

Sections (each one the library behind a ``uniaudio eval`` command):

1. codec reconstruction on held-out speech: FSDD speaker ``nicolas`` and the LibriSpeech
   test-other excerpts (``librispeech/metadata.csv`` rows whose ``split`` is a speaker id);
2. 2-way 1-shot ESC-10 and RAVDESS with every method: icl in default (channel) and paper mode,
   prototype with and without centring, at least 10 draws x 20 queries;
3. Table 2 grid (paper mode) (induction / shots / repeats x semantic layer / all layers) on ESC-10 2-way and
   3-way and RAVDESS 2-way (the paper: ESC-50 and ESD), on the folds held out of codec training
   (ESC-10 fold 3, RAVDESS actors 11-12; ``bench/heldout.py`` views; ``--all-folds``: everything);
   where the held-out labels have too few clips, episodes get fewer queries and there are more
   of them (about the same number of queries per setting);
4. Table 9: N-way 1-shot, N = 2..6, on ESC-10 (held-out fold), paper and default mode;
5. simple TTS: the 20 questions (pocketsphinx ACC, DNSMOS);
6. denoising: LibriSpeech test-other x the noise folder at 0 / 5 / 10 dB.

Classification and denoising keep resumable results under ``$UNIAUDIO_HOME/eval`` (one file
per settings), so an interrupted run picks up where it stopped. ``--quick`` runs a reduced
size meant to finish in about 30-40 minutes on a 2-core CPU; ``--episodes`` etc. override it.

    python bench/results.py [--data ../shared/data] [--out docs/results.md] [--quick]
                            [--episodes E] [--queries Q] [--codec-files N] [--denoise-files N]
                            [--only codec table2 ways tts denoise] [--llm ..] [--codec ..] [--device ..]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# runnable from a checkout without installing the package
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniaudio_cli.evaluate.codec_eval import spread  # noqa: E402
from uniaudio_cli.evaluate.report import (  # noqa: E402
    Column,
    Table,
    format_value,
    run_metadata,
    to_markdown,
)

SECTIONS = ("codec", "fewshot", "table2", "ways", "tts", "denoise")

# The paper's figures (UniAudio 1.5, LLaMA 2 7B; see ../shared/reference/paper.md).
PAPER_CODEC = {"pesq": 2.55, "stoi": 0.82, "tokens_per_second": 57.0, "set": "VCTK, 200 utterances"}
PAPER_TABLE2 = {
    # our task -> (paper task, random, semantic layer row, all layers row)
    "esc10-2": {
        "task": "2-way sound event, ESC-50",
        "random": 45,
        "semantic": [48, 60, 57, 57, 73],
        "all": [41, 48, 55, 54, 62],
    },
    "esc10-3": {
        "task": "3-way sound event, ESC-50",
        "random": 30,
        "semantic": [38, 41, 39, 43, 42],
        "all": [25, 37, 35, 44, 50],
    },
    "ravdess-2": {
        "task": "2-way emotion, ESD",
        "random": 44,
        "semantic": [25, 53, 59, 53, 54],
        "all": [45, 49, 53, 55, 54],
    },
}
PAPER_WAYS = {"task": "ESC-50, LLaMA 2 7B", "ways": {2: 60, 3: 41, 4: 36, 5: 33, 6: 17}}
PAPER_WAYS_13B = {2: 62, 3: 42, 4: 41, 5: 43, 6: 31}
PAPER_TTS = {"acc": 70.0, "dnsmos": 2.92}
PAPER_DENOISE = {"pesq": 2.17, "stoi": 0.57}

QUICK = {"episodes": 4, "queries": 12, "codec_files": 40, "denoise_files": 6}
FEWSHOT = {"episodes": 10, "queries": 20}  # the 10 demonstration draws x 20 queries, even with --quick
FULL = {"episodes": 20, "queries": 20, "codec_files": 0, "denoise_files": 30}  # 0: every file


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metadata.csv", newline="") as f:
        return [{k.strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f)]


def held_out_fsdd(data: Path) -> list[Path]:
    """FSDD clips of speaker nicolas (held out from codec training)."""
    return sorted(data / "fsdd" / r["path"] for r in _rows(data / "fsdd") if r.get("speaker") == "nicolas")


def held_out_librispeech(data: Path) -> list[Path]:
    """LibriSpeech test-other excerpts: rows whose ``split`` is a numeric speaker id."""
    return sorted(data / "librispeech" / r["path"] for r in _rows(data / "librispeech") if r.get("split", "").isdigit())


def demote(markdown: str) -> str:
    """Push a report's headings one level down, to nest it in a section."""
    return "\n".join("#" + line if line.startswith("##") else line for line in markdown.splitlines()) + "\n"


def _table_md(table: Table, level: int = 4) -> str:
    from uniaudio_cli.evaluate.report import markdown_table

    out = [f"{'#' * level} {table.title}", "", *markdown_table(table), ""]
    out += [f"- {n}" for n in table.notes]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- sections


def section_codec(llm: Any, codec: Any, data: Path, size: dict[str, int]) -> str:
    from uniaudio_cli.evaluate.codec_eval import evaluate_codec

    parts = []
    compare = []
    sets = {
        "FSDD, speaker nicolas (held out)": spread(held_out_fsdd(data), size["codec_files"]),
        "LibriSpeech test-other excerpts (held out)": spread(held_out_librispeech(data), size["codec_files"]),
    }
    for name, files in sets.items():
        t0 = time.perf_counter()
        result = evaluate_codec(codec, files, progress=sys.stderr.isatty())
        secs = time.perf_counter() - t0
        summary = result.summary()
        compare.append(
            {
                "set": name,
                "clips": len(result.clips),
                "pesq": summary["pesq"].mean,
                "stoi": summary["stoi"].mean,
                "tps": summary["tokens_per_second"].mean,
                "seconds": secs,
            }
        )
        parts.append(
            demote(to_markdown(result.to_report(metadata={}))).replace(
                "### Codec evaluation", f"### {name}: codec evaluation", 1
            )
        )
    compare.append(
        {
            "set": f"paper: LLM-Codec ({PAPER_CODEC['set']})",
            "pesq": PAPER_CODEC["pesq"],
            "stoi": PAPER_CODEC["stoi"],
            "tps": PAPER_CODEC["tokens_per_second"],
        }
    )
    table = Table(
        "Ours beside the paper (Table 1)",
        [
            Column("set", "Set"),
            Column("clips", "Clips", "d"),
            Column("pesq", "PESQ-WB", ".2f"),
            Column("stoi", "STOI", ".3f"),
            Column("tps", "Tokens / s", ".1f"),
            Column("seconds", "Wall s", ".0f"),
        ],
        compare,
        ["Different speech (FSDD 8 kHz digits, LibriSpeech read speech) than the paper's VCTK; indicative only."],
    )
    return _table_md(table) + "\n" + "\n".join(parts)


HELDOUT_NOTE = {
    "esc10": "ESC-10 fold 3 (held out of codec training)",
    "ravdess": "RAVDESS actors 11-12 (held out of codec training)",
}


def class_folder(data: Path, name: str, all_folds: bool) -> tuple[Path, str]:
    """The labelled folder to classify: by default the held-out view made by bench/heldout.py
    (built here when missing), with ``all_folds`` the whole shared folder."""
    if all_folds:
        return data / name, f"{name}, all folds (the codec was trained on most of them)"
    view = ROOT / ".data" / "heldout"
    if not (view / name).is_dir():
        import subprocess

        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "heldout.py"), "--data", str(data), "--out", str(view)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return view / name, HELDOUT_NOTE[name]


def fitted_queries(folder: Path, configs: list[Any], wanted: int) -> int:
    """``wanted`` queries per episode, or fewer when the folder's smallest labels cannot supply them."""
    from uniaudio_cli.evaluate.classify_eval import max_queries
    from uniaudio_cli.tasks.demos import load_demo_folder

    clips = load_demo_folder(folder).clips
    return max(1, min([wanted, *(max_queries(clips, c.ways, c.shots) for c in configs)]))


def scaled_episodes(size: dict[str, int], queries: int) -> int:
    """Episodes enough for about ``episodes x queries`` queries per setting when the episodes had
    to be made smaller than asked."""
    return math.ceil(size["episodes"] * size["queries"] / max(queries, 1))


def section_fewshot(llm: Any, codec: Any, data: Path, size: dict[str, int]) -> str:
    from uniaudio_cli.evaluate.classify_eval import EpisodeConfig, evaluate_classification

    configs = [
        EpisodeConfig(method="icl", mode="default", crop=None),
        EpisodeConfig(method="icl", mode="paper", crop=1.0),
        EpisodeConfig(method="prototype", crop=None),
        EpisodeConfig(method="prototype", crop=None, center=False),
    ]
    wanted = {k: max(size[k], v) for k, v in FEWSHOT.items()}
    out = []
    for name in ("esc10", "ravdess"):
        folder, what = class_folder(data, name, bool(size.get("all_folds")))
        queries = fitted_queries(folder, configs, wanted["queries"])
        episodes = scaled_episodes(wanted, queries)
        log(f"few-shot: {name} 2-way 1-shot, {episodes} episodes of {queries} queries")
        result = evaluate_classification(
            llm, codec, folder, configs, episodes=episodes, queries=queries, seed=0, progress=sys.stderr.isatty()
        )
        rep = result.to_report(title=f"{what}, 2-way 1-shot", metadata={})
        out.append(demote(to_markdown(rep)) + f"\n*wall time {result.wall_seconds:.0f} s*\n")
    return "\n".join(out)


def section_table2(llm: Any, codec: Any, data: Path, size: dict[str, int]) -> str:
    from uniaudio_cli.evaluate.classify_eval import EpisodeConfig, evaluate_classification, paper_grid

    out = []
    for key, name, ways in (("esc10-2", "esc10", 2), ("esc10-3", "esc10", 3), ("ravdess-2", "ravdess", 2)):
        folder, what = class_folder(data, name, bool(size.get("all_folds")))
        # The paper's Table 2 is in-context learning: icl, whatever the CLI's default method.
        configs = paper_grid(EpisodeConfig(ways=ways, method="icl", mode="paper", crop=1.0))
        queries = fitted_queries(folder, configs, size["queries"])
        episodes = scaled_episodes(size, queries)
        log(f"table 2: {name} {ways}-way, {episodes} episodes of {queries} queries")
        result = evaluate_classification(
            llm,
            codec,
            folder,
            configs,
            episodes=episodes,
            queries=queries,
            seed=0,
            grid="paper",
            progress=sys.stderr.isatty(),
        )
        rep = result.to_report(
            title=f"{what}, {ways}-way, paper mode (paper: {PAPER_TABLE2[key]['task']})",
            metadata={},
            paper=PAPER_TABLE2[key],
        )
        out.append(demote(to_markdown(rep)) + f"\n*wall time {result.wall_seconds:.0f} s*\n")
    return "\n".join(out)


def section_ways(llm: Any, codec: Any, data: Path, size: dict[str, int]) -> str:
    from uniaudio_cli.evaluate.classify_eval import EpisodeConfig, evaluate_classification, ways_grid

    folder, what = class_folder(data, "esc10", bool(size.get("all_folds")))
    out = []
    for mode, crop in (("paper", 1.0), ("default", None)):
        configs = ways_grid(EpisodeConfig(method="icl", mode=mode, crop=crop))
        queries = fitted_queries(folder, configs, size["queries"])
        result = evaluate_classification(
            llm,
            codec,
            folder,
            configs,
            episodes=scaled_episodes(size, queries),
            queries=queries,
            seed=0,
            grid="ways",
            progress=sys.stderr.isatty(),
        )
        rep = result.to_report(
            title=f"{what}, N-way 1-shot, icl {mode} mode (paper: ESC-50)", metadata={}, paper=PAPER_WAYS
        )
        rep.tables[0].rows.append(
            {"source": "paper (ESC-50, LLaMA 2 13B)", **{f"n{n}": v for n, v in PAPER_WAYS_13B.items()}}
        )
        out.append(demote(to_markdown(rep)) + f"\n*wall time {result.wall_seconds:.0f} s*\n")
    return "\n".join(out)


def section_tts(llm: Any, codec: Any, data: Path, size: dict[str, int]) -> str:
    from uniaudio_cli.evaluate.tts_eval import QUESTION_SETS, evaluate_tts

    t0 = time.perf_counter()
    result = evaluate_tts(llm, codec, progress=sys.stderr.isatty())
    rep = result.to_report(
        title="Simple TTS (paper Table 4: FSDD demonstrations; ours: shipped espeak-ng digits)",
        metadata={},
        paper=PAPER_TTS,
    )
    parts = [demote(to_markdown(rep))]
    # The three question levels of the paper's authors, default mode, beside its text step.
    rows = []
    for name in QUESTION_SETS[1:]:
        r = evaluate_tts(llm, codec, modes=("default",), references=False, questions=name, progress=False)
        s = r.systems[0]
        lo, hi = s.wilson() or (0.0, 0.0)
        spoken = f"{s.accuracy():.0%} [{lo:.0%}, {hi:.0%}]"
        rows.append(f"| {name} | {len(r.questions)} | {spoken} | {s.text_accuracy():.0%} |")
    parts.append(
        "### Question levels (`uniaudio eval tts --mode default --questions SET`)\n\n"
        "| set | questions | spoken ACC [95 % Wilson] | text ACC |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    return "\n".join(parts) + f"\n*wall time {time.perf_counter() - t0:.0f} s*\n"


def section_denoise(llm: Any, codec: Any, data: Path, size: dict[str, int]) -> str:
    from uniaudio_cli.evaluate.denoise_eval import evaluate_denoising

    files = held_out_librispeech(data)
    result = evaluate_denoising(
        llm,
        codec,
        files,
        data / "noise",
        snrs=(0.0, 5.0, 10.0),
        max_files=size["denoise_files"] or None,
        seconds=4.0,
        seed=0,
        progress=sys.stderr.isatty(),
        clean_root=data / "librispeech",
    )
    rep = result.to_report(
        title="Denoising: LibriSpeech test-other x noise folder (paper Table 5: VCTK + NoiseX-92)",
        metadata={},
        paper=PAPER_DENOISE,
    )
    return demote(to_markdown(rep)) + f"\n*wall time {result.seconds:.0f} s*\n"


RUNNERS: dict[str, tuple[str, Callable[..., str]]] = {
    "codec": ("1. Codec reconstruction on held-out speech (paper Table 1)", section_codec),
    "fewshot": ("2. Few-shot classification, every method (2-way 1-shot)", section_fewshot),
    "table2": ("3. Few-shot classification grid (paper Table 2)", section_table2),
    "ways": ("4. N-way 1-shot sound events (paper Table 9)", section_ways),
    "tts": ("5. Simple TTS (paper Table 4)", section_tts),
    "denoise": ("6. Speech denoising (paper Table 5)", section_denoise),
}


def build(
    llm: Any,
    codec: Any,
    data: Path,
    size: dict[str, int],
    only: tuple[str, ...] = SECTIONS,
    quick: bool = False,
    on_section: Callable[[str], None] | None = None,
) -> str:
    """The whole Markdown document (each section timed; a failing section is reported, not fatal).
    ``on_section`` receives the document so far after each section (sections still to run are
    marked pending), so that an interrupted run leaves what it finished."""
    meta = run_metadata(
        llm.device,
        llm=llm.vocabulary.name,
        codec=str(getattr(codec, "source", "")),
        data=str(data),
        size=("quick " if quick else "") + json.dumps(size),
    )
    t_all = time.perf_counter()
    body: list[str] = []
    timings: list[dict[str, Any]] = []

    def document(pending: list[str]) -> str:
        rows = [*timings, *({"section": RUNNERS[k][0], "status": "pending"} for k in pending)]
        rows.append({"section": "total", "seconds": time.perf_counter() - t_all})
        timing = Table(
            "Wall time per section",
            [Column("section", "Section"), Column("status", "Status"), Column("seconds", "Seconds", ".0f")],
            rows,
        )
        head = [
            "# Results",
            "",
            "Generated by `python bench/results.py" + (" --quick" if quick else "") + "`; do not edit by hand.",
            "",
            *(f"- **{k}**: {format_value(v)}" for k, v in meta.items()),
            "",
            "The paper's figures come from LLaMA 2 7B with its own codec on other data sets (ESC-50, ESD, VCTK, "
            f"NoiseX-92); ours from {llm.vocabulary.name} and its LLM-Codec on the shared development data "
            "(held out of codec training: ESC-10 fold 3, RAVDESS actors 11-12, LibriSpeech test-other, FSDD "
            "speaker nicolas; Speech Commands noise). They are placed side by "
            "side for orientation, not as like-for-like comparisons. Intervals are 95 %.",
            "",
            _table_md(timing, level=2),
        ]
        return "\n".join(head) + "\n" + "\n".join(body)

    for i, key in enumerate(only):
        title, fn = RUNNERS[key]
        log(f"== {title}")
        t0 = time.perf_counter()
        try:
            text = fn(llm, codec, data, size)
            status = "ok"
        except Exception as e:  # keep the other sections
            text = f"**failed:** `{type(e).__name__}: {e}`\n\n```\n{traceback.format_exc(limit=3)}```\n"
            status = "failed"
            log(f"   failed: {e}")
        secs = time.perf_counter() - t0
        timings.append({"section": title, "status": status, "seconds": secs})
        body.append(f"## {title}\n\n{text}")
        log(f"   {secs:.0f} s")
        if on_section is not None:
            on_section(document(list(only[i + 1 :])))
    return document([])


def main(argv: list[str] | None = None, models: tuple[Any, Any] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    ap.add_argument("--quick", action="store_true", help=f"reduced size: {QUICK}")
    ap.add_argument("--episodes", type=int, help="classification episodes per setting")
    ap.add_argument("--queries", type=int, help="queries per episode")
    ap.add_argument("--codec-files", type=int, help="clips per codec set (0: all)")
    ap.add_argument("--denoise-files", type=int, help="clean files for denoising (0: all)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument(
        "--all-folds",
        action="store_true",
        help="classify on the whole esc10/ravdess folders instead of their held-out folds",
    )
    ap.add_argument("--llm")
    ap.add_argument("--codec")
    ap.add_argument("--device")
    ap.add_argument("--dtype")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)

    size = dict(QUICK if args.quick else FULL)
    for k in size:
        v = getattr(args, k)
        if v is not None:
            size[k] = v
    if args.all_folds:
        size["all_folds"] = 1
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if models is None:
        from uniaudio_cli.api import load_models

        models = load_models(args.llm, args.codec, args.device, args.dtype)
    llm, codec = models
    from uniaudio_cli.audio import write_text_atomic

    def save(text: str) -> None:
        write_text_atomic(args.out, text, force=True)

    save(build(llm, codec, args.data, size, tuple(args.only), args.quick, on_section=save))
    log(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
