"""Text-to-sound judged by recognisers: is each generated clip heard as the class it was asked for?

``DIR/<class>/<clips>``: per class, a seeded draw of ``shots`` clips are demonstrations (the
generator's prompt holds those of every class) and the others are held out. Each class's caption
is its folder name with ``_`` read as a space; ``clips`` clips are generated per class (sampling
seeds ``seed``, ``seed + 1``, ...). Two judges, fitted on the held-out real clips only (never on
the demonstrations), say which class each clip is:

- the prototype classifier (:class:`~uniaudio_cli.tasks.classify.Classifier`, method
  ``prototype``): nearest class centroid of the frozen LLM's hidden states over the clip's codes;
- MFCC nearest neighbour (cosine, MFCC 1-19 mean and standard deviation), the baseline of
  ``uniaudio eval classify``.

References, judged the same way:

- held-out real clips, leave-one-out (each against the other held-out clips): what a generator
  of clips as recognisable as real ones would score;
- a demonstration of the asked class, decoded from its codes: what copying a demonstration
  verbatim scores (a small LLM mostly copies, so this bounds it from above in practice);
- a random demonstration of a random class (seeded): the chance level, measured.

Every clip a judge sees has the generated length: held-out clips are cropped to their loudest
part (or zero-padded), and demonstrations are the generator's own crops. Accuracies come with
Wilson 95 % intervals over clips.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uniaudio_cli.errors import UsageError
from uniaudio_cli.evaluate.report import Column, Report, Table, run_metadata
from uniaudio_cli.evaluate.store import relative_name, wilson_interval

if TYPE_CHECKING:
    from uniaudio_cli.codec.api import Codec
    from uniaudio_cli.llm import LoadedLLM
    from uniaudio_cli.tasks.generate import GenerateOptions

GENERATED = "uniaudio generate"
HELDOUT = "held-out real clips (leave-one-out)"
COPY = "a demonstration of the asked class (copy)"
RANDOM = "a random demonstration of a random class"
MIN_HELDOUT = 2  # leave-one-out needs another held-out clip of the class


@dataclass
class Split:
    """Per class: the demonstration clips and the held-out clips (disjoint)."""

    demos: dict[str, list[Path]]
    heldout: dict[str, list[Path]]


def split_clips(clips: Mapping[str, Sequence[Path]], shots: int, seed: int, max_heldout: int | None = None) -> Split:
    """Shuffle each class's clips (seeded by ``seed`` and the class): the first ``shots`` are
    demonstrations, the rest held out (at most ``max_heldout``). Raises :class:`UsageError`
    naming the class when it has fewer than ``shots + 2`` clips."""
    if max_heldout is not None and max_heldout < MIN_HELDOUT:
        raise UsageError(f"--max-heldout {max_heldout}: leave-one-out needs {MIN_HELDOUT}", "use --max-heldout 2")
    demos: dict[str, list[Path]] = {}
    held: dict[str, list[Path]] = {}
    for label in clips:
        order = sorted(Path(p) for p in clips[label])
        if len(order) < shots + MIN_HELDOUT:
            raise UsageError(
                f"class {label!r} has {len(order)} clips; {shots} demonstration(s) + {MIN_HELDOUT} held out need "
                f"{shots + MIN_HELDOUT}",
                "lower --shots or add clips",
            )
        random.Random(f"uniaudio-generate-split:{seed}:{label}").shuffle(order)
        demos[label] = order[:shots]
        held[label] = order[shots:] if max_heldout is None else order[shots : shots + max_heldout]
    return Split(demos, held)


@dataclass
class SystemResult:
    """One system's clips: per clip the asked class and what each judge heard."""

    name: str
    items: list[dict[str, Any]] = field(default_factory=list)

    def correct(self, judge: str) -> int:
        return sum(i[judge] == i["label"] for i in self.items)

    def accuracy(self, judge: str) -> float | None:
        return self.correct(judge) / len(self.items) if self.items else None

    def wilson(self, judge: str) -> tuple[float, float] | None:
        return wilson_interval(self.correct(judge), len(self.items))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "clips": len(self.items),
            **{
                f"{judge}_{key}": value
                for judge in ("prototype", "mfcc")
                for key, value in (("accuracy", self.accuracy(judge)), ("wilson95", self.wilson(judge)))
            },
            "items": self.items,
        }


@dataclass
class GenerateEvalResult:
    """The judged clips of every system, and how the run was set up."""

    data: str
    labels: list[str]
    systems: list[SystemResult]
    settings: dict[str, Any]
    device: str = "cpu"
    wall_seconds: float = 0.0

    def system(self, name: str) -> SystemResult:
        return next(s for s in self.systems if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "labels": self.labels,
            "settings": self.settings,
            "wall_seconds": self.wall_seconds,
            "chance": 1.0 / len(self.labels),
            "systems": [s.to_dict() for s in self.systems],
        }

    def to_report(self, title: str = "Text-to-sound: generated clips recognised as their class") -> Report:
        """The summary (every system beside chance) and the generated clips per class."""
        meta = run_metadata(self.device, data=self.data, **{k: self.settings[k] for k in ("llm", "codec")})
        rows: list[dict[str, Any]] = []
        for s in self.systems:
            row = {"system": s.name, "clips": len(s.items)}
            for judge in ("prototype", "mfcc"):
                row[judge] = s.accuracy(judge)
                row[f"{judge}_ci"] = s.wilson(judge)
            if s.name == GENERATED:
                row["seconds"] = self.settings.get("seconds_per_clip")
            rows.append(row)
        n = len(self.labels)
        rows.append({"system": f"chance (1/{n})", "prototype": 1.0 / n, "mfcc": 1.0 / n})
        st = self.settings
        crop = f"cropped to {st['crop']:g} s" if st["crop"] else "whole"
        notes = [
            f"{n} classes; per class {st['shots']} demonstration clip(s) in the prompt "
            f"({crop}), "
            f"{st['clips']} generated clip(s) of {st['seconds']:g} s, held-out clips per class: "
            f"{', '.join(str(v) for v in st['heldout_per_class'].values())}; {st['mode']} mode, seed {st['seed']}, "
            f"temperature {st['temperature']:g}, top-k {st['top_k']}.",
            "Judges fitted on the held-out real clips only: prototype = nearest centroid of the frozen LLM's hidden "
            "states (uniaudio classify --method prototype); MFCC 1-NN = cosine nearest held-out clip on MFCC 1-19 "
            "mean+std. 95 % Wilson intervals over clips.",
            "Held-out real: each held-out clip against the other held-out clips. Copy: a demonstration of the asked "
            "class through the codec (what verbatim copying scores). Random: a random demonstration of a random "
            "class (chance, measured).",
        ]
        summary = Table(
            "Recognised as the asked class",
            [
                Column("system", "System"),
                Column("clips", "Clips", "d"),
                Column("prototype", "Prototype", ".1%"),
                Column("prototype_ci", "95 % Wilson", ".1%"),
                Column("mfcc", "MFCC 1-NN", ".1%"),
                Column("mfcc_ci", "95 % Wilson", ".1%"),
                Column("seconds", "s / clip", ".1f"),
            ],
            rows,
            notes,
        )
        gen = self.system(GENERATED)
        per_class = []
        for label in self.labels:
            items = [i for i in gen.items if i["label"] == label]
            heard = Counter(i["prototype"] for i in items).most_common(1)
            per_class.append(
                {
                    "label": label,
                    "caption": items[0]["caption"] if items else None,
                    "clips": len(items),
                    "prototype": sum(i["prototype"] == label for i in items),
                    "mfcc": sum(i["mfcc"] == label for i in items),
                    "heard": heard[0][0] if heard else None,
                    "own": sum(i["follows_label"] == label for i in items),
                    "copied": float(np.mean([i["copied"] for i in items])) if items else None,
                }
            )
        detail = Table(
            "Generated clips per class",
            [
                Column("label", "Class"),
                Column("caption", "Caption"),
                Column("clips", "Clips", "d"),
                Column("prototype", "Prototype right", "d"),
                Column("mfcc", "MFCC right", "d"),
                Column("heard", "Prototype hears most"),
                Column("own", "Follows own class", "d"),
                Column("copied", "Pairs copied", ".0%"),
            ],
            per_class,
            [
                "Follows own class: the demonstration the clip copies most (the most of its token pairs, two codes "
                "in a row within a layer) is of the asked class. Pairs copied: mean share of the clip's token pairs "
                "found in that demonstration."
            ],
        )
        return Report(title, [summary, detail], meta, self.to_dict())


def _judge(
    classifier: Any, mfcc_refs: dict[str, list[np.ndarray]], wav: np.ndarray, sample_rate: int
) -> tuple[str, str]:
    """What the prototype classifier and MFCC 1-NN hear in ``wav``."""
    from uniaudio_cli.evaluate.classify_eval import mfcc_features, nearest_neighbour

    return classifier.classify_audio(wav).label, nearest_neighbour(mfcc_refs, mfcc_features(wav, sample_rate))


def evaluate_generation(
    llm: LoadedLLM,
    codec: Codec,
    data: str | Path,
    opts: GenerateOptions,
    clips: int = 2,
    max_heldout: int | None = None,
    out_dir: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> GenerateEvalResult:
    """Generate ``clips`` clips per class of the folder ``data`` from ``opts.shots``
    demonstrations per class and judge them, with the references (see the module's docstring).
    ``out_dir`` receives ``<class>/<k>.wav`` for every generated clip."""
    from uniaudio_cli.audio import write_audio
    from uniaudio_cli.batch import progress_bar
    from uniaudio_cli.evaluate.classify_eval import mfcc_features, nearest_neighbour
    from uniaudio_cli.tasks.classify import Classifier, ClassifyOptions, load_clip
    from uniaudio_cli.tasks.demos import crop_or_pad, load_demo_folder
    from uniaudio_cli.tasks.generate import SoundGenerator, caption_of

    if clips < 1:
        raise UsageError("--clips must be at least 1", "use --clips 2")
    root = Path(data)
    folder = load_demo_folder(root)
    split = split_clips(folder.clips, opts.shots, opts.seed, max_heldout)
    labels = list(folder.clips)
    sr = codec.sample_rate
    t_start = time.perf_counter()
    gen = SoundGenerator.from_files(llm, codec, split.demos, opts)
    label_of = {caption_of(label): label for label in labels}
    judge_opts = ClassifyOptions(method="prototype", crop=gen.seconds)
    held_wavs = {lb: [load_clip(p, sr, judge_opts) for p in ps] for lb, ps in split.heldout.items()}
    held_tokens = {lb: [codec.encode(w)[0] for w in ws] for lb, ws in held_wavs.items()}
    held_mfcc = {lb: [mfcc_features(w, sr) for w in ws] for lb, ws in held_wavs.items()}
    judge = Classifier(llm, codec, held_tokens, judge_opts)
    out = Path(out_dir) if out_dir is not None else None

    n_held = sum(len(v) for v in held_wavs.values())
    systems = {name: SystemResult(name) for name in (GENERATED, HELDOUT, COPY, RANDOM)}
    bar = progress_bar(progress)
    with bar:
        task = bar.add_task("generating", total=len(labels) * clips * 3 + n_held)
        gen_seconds = 0.0
        for label in labels:
            caption = caption_of(label)
            for k in range(clips):
                bar.update(task, description=f"generating {caption} ({k + 1}/{clips})")
                t0 = time.perf_counter()
                sound = gen.generate(caption, seed=opts.seed + k)
                gen_seconds += time.perf_counter() - t0
                proto, mfcc = _judge(judge, held_mfcc, sound.audio, sr)
                item = {
                    "label": label,
                    "caption": caption,
                    "seed": sound.seed,
                    "prototype": proto,
                    "mfcc": mfcc,
                    "follows": relative_name(sound.follows.path, root) if sound.follows.path else None,
                    "follows_label": label_of.get(sound.follows.caption),
                    "copied": sound.copied,
                }
                if out is not None:
                    item["wav"] = str(write_audio(out / label / f"{k}.wav", sound.audio, sr, force=force))
                systems[GENERATED].items.append(item)
                bar.advance(task)

        # The references use the generator's own (cropped, encoded) demonstrations.
        decoded = {
            id(d): crop_or_pad(codec.decode(d.tokens, d.num_samples), gen.num_samples, "loudest") for d in gen.demos
        }
        by_caption = {c: [d for d in gen.demos if d.caption == c] for c in gen.captions}
        rng = random.Random(f"uniaudio-generate-random:{opts.seed}")
        bar.update(task, description="references")
        for label in labels:
            own = by_caption[caption_of(label)]
            for k in range(clips):
                for name, demo in (
                    (COPY, own[k % len(own)]),
                    (RANDOM, rng.choice(by_caption[rng.choice(gen.captions)])),
                ):
                    proto, mfcc = _judge(judge, held_mfcc, decoded[id(demo)], sr)
                    source = relative_name(demo.path, root) if demo.path else demo.caption
                    systems[name].items.append({"label": label, "source": source, "prototype": proto, "mfcc": mfcc})
                    bar.advance(task)

        # Leave-one-out: one judge per held-out clip, fitted on the others.
        for label in labels:
            for i, path in enumerate(split.heldout[label]):
                rest_tokens = {
                    lb: [t for j, t in enumerate(ts) if (lb, j) != (label, i)] for lb, ts in held_tokens.items()
                }
                rest_mfcc = {lb: [f for j, f in enumerate(fs) if (lb, j) != (label, i)] for lb, fs in held_mfcc.items()}
                loo = Classifier(llm, codec, rest_tokens, judge_opts)
                systems[HELDOUT].items.append(
                    {
                        "label": label,
                        "source": relative_name(path, root),
                        "prototype": loo.classify_tokens(held_tokens[label][i]).label,
                        "mfcc": nearest_neighbour(rest_mfcc, held_mfcc[label][i]),
                    }
                )
                bar.advance(task)

    settings = {
        "llm": llm.vocabulary.name,
        "codec": str(getattr(codec, "source", "")),
        "mode": opts.mode,
        "shots": opts.shots,
        "clips": clips,
        "crop": opts.crop,
        "seconds": gen.seconds,
        "temperature": opts.temperature,
        "top_k": opts.top_k,
        "seed": opts.seed,
        "heldout_per_class": {lb: len(v) for lb, v in split.heldout.items()},
        "demos": {lb: [relative_name(p, root) for p in ps] for lb, ps in split.demos.items()},
        "prompt_tokens": len(gen.prefix.prefix),
        "seconds_per_clip": gen_seconds / (len(labels) * clips),
    }
    return GenerateEvalResult(
        data=str(root),
        labels=labels,
        systems=[systems[n] for n in (GENERATED, HELDOUT, COPY, RANDOM)],
        settings=settings,
        device=str(llm.device),
        wall_seconds=time.perf_counter() - t_start,
    )
