"""Synthetic English speech for training: varied sentences spoken by many espeak-ng voices.

Writes a data folder in the layout of the shared development data (one sub-folder per label,
16 kHz mono 16-bit FLAC, ``metadata.csv``), with the voice as label and the transcript in the
``text`` column. Everything is drawn from one seeded generator, so a seed and an espeak-ng build
give the same folder.

    python -m uniaudio_cli.train.synth_data OUT_DIR --clips 1500 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from uniaudio_cli.audio import write_audio
from uniaudio_cli.synth import ENGLISH_VOICES, synthesize

SAMPLE_RATE = 16000
SPEED_RANGE = (120, 220)  # words per minute: slow but clear up to brisk
PITCH_RANGE = (25, 75)  # espeak-ng pitch; the extremes sound unnatural
PEAK_RANGE = (0.3, 0.95)  # random output level, so models do not learn one loudness
METADATA_FIELDS = ("path", "label", "seconds", "text", "voice", "speed", "pitch")

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """English words for ``0 <= n < 10000`` ("forty two", "three hundred and five")."""
    if not 0 <= n < 10000:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    tail = "" if not rest else (f" and {number_words(rest)}" if rest < 100 else f" {number_words(rest)}")
    return f"{_ONES[thousands]} thousand{tail}"


# Word lists for the template grammar. Kept plain so espeak-ng pronounces them well.
_SOUND_SOURCES = (
    ("a dog", ("barking", "growling", "whining", "howling")),
    ("a cat", ("meowing", "purring", "hissing")),
    ("a baby", ("crying", "laughing", "babbling")),
    ("a rooster", ("crowing",)),
    ("a bird", ("singing", "chirping")),
    ("the rain", ("falling on the roof", "pouring down", "tapping on the window")),
    ("the sea", ("crashing on the shore", "rolling in")),
    ("a clock", ("ticking", "chiming")),
    ("a helicopter", ("flying overhead", "hovering nearby")),
    ("a chainsaw", ("cutting wood", "running")),
    ("the fire", ("crackling", "burning")),
    ("a man", ("sneezing", "coughing", "laughing", "whistling", "talking")),
    ("a woman", ("sneezing", "singing", "laughing", "talking")),
    ("a car", ("honking", "driving past", "starting")),
    ("a train", ("passing by", "blowing its whistle")),
    ("the wind", ("blowing", "howling")),
    ("a phone", ("ringing", "buzzing")),
    ("someone", ("knocking on the door", "typing on a keyboard", "washing the dishes", "clapping")),
)
_SOUND_PLACES = ("", " in the distance", " outside", " nearby", " in the next room", " on the street", " at night")
_EMOTIONS = ("happy", "sad", "angry", "calm", "afraid", "surprised", "disgusted", "tired", "excited", "nervous")
_EMOTION_TEMPLATES = (
    "I feel {e} today.",
    "She sounds {e}.",
    "He looks very {e}.",
    "Why are you so {e}?",
    "They were {e} about the news.",
    "This song makes me {e}.",
    "We are not {e} at all.",
)
_COMMANDS = (
    "stop", "go", "yes", "no", "up", "down", "left", "right", "on", "off",
    "turn on the light", "turn off the radio", "open the door", "close the window", "play some music",
    "call my mother", "set a timer for five minutes", "what time is it", "start recording", "go back",
    "next song", "volume up", "volume down", "wake me up at seven", "cancel that", "show me the map",
)  # fmt: skip
_SUBJECTS = (
    "my sister", "my brother", "the teacher", "our neighbour", "the old man", "a young girl", "the doctor",
    "my friend", "the children", "everyone", "the driver", "her father", "his mother", "the cook", "I", "we", "they",
)  # fmt: skip
_PLURAL_SUBJECTS = frozenset({"I", "we", "they", "the children"})
_VERB_PHRASES = (
    "reads a book", "drinks a cup of tea", "walks the dog", "cleans the kitchen", "waits for the bus",
    "writes a letter", "plays the piano", "paints the fence", "fixes the bike", "cooks dinner",
    "buys fresh bread", "watches the news", "opens the window", "feeds the birds", "takes a short nap",
    "sings a song", "packs a bag", "counts the coins", "answers the phone", "plants a tree",
)  # fmt: skip
_PLACES = (
    "", " in the kitchen", " at the station", " in the garden", " near the river", " at school", " in the park",
    " at home", " on the train", " by the window", " in the city",
)  # fmt: skip
_TIMES = (
    "", " every morning", " on Sunday", " after lunch", " before dinner", " at night", " today", " once a week",
    " in the evening", " right now",
)  # fmt: skip
_QUESTIONS = (
    "Where is the {o}?",
    "Have you seen the {o}?",
    "Can you bring me the {o}, please?",
    "Is the {o} on the table?",
    "Who took my {o}?",
)
_OBJECTS = ("key", "phone", "red cup", "blue bag", "umbrella", "letter", "ticket", "hammer", "map", "blanket")
_ARITH = (("plus", lambda a, b: a + b), ("minus", lambda a, b: a - b), ("times", lambda a, b: a * b))


def _digit(rng: random.Random) -> str:
    return number_words(rng.randrange(10))


def _number(rng: random.Random) -> str:
    return number_words(rng.choice((rng.randrange(10, 100), rng.randrange(100, 1000), rng.randrange(1000, 10000))))


def _arithmetic(rng: random.Random) -> str:
    name, op = rng.choice(_ARITH)
    a, b = rng.randrange(10), rng.randrange(10)
    if name == "minus" and b > a:
        a, b = b, a
    return f"{number_words(a)} {name} {number_words(b)} is {number_words(op(a, b))}"


def _count(rng: random.Random) -> str:
    start, n = rng.randrange(8), rng.randrange(3, 6)
    step = rng.choice((1, 1, 2, -1))
    seq = [start + i * step for i in range(n)] if step > 0 else [start + n - 1 - i for i in range(n)]
    return ", ".join(number_words(x) for x in seq)


def _sound_event(rng: random.Random) -> str:
    source, actions = rng.choice(_SOUND_SOURCES)
    sentence = f"{source} is {rng.choice(actions)}{rng.choice(_SOUND_PLACES)}"
    return sentence[0].upper() + sentence[1:] + "."


def _emotion(rng: random.Random) -> str:
    return rng.choice(_EMOTION_TEMPLATES).format(e=rng.choice(_EMOTIONS))


def _command(rng: random.Random) -> str:
    return rng.choice(_COMMANDS)


def _everyday(rng: random.Random) -> str:
    subject = rng.choice(_SUBJECTS)
    verb = rng.choice(_VERB_PHRASES)
    if subject in _PLURAL_SUBJECTS:
        verb = _base_form(verb)
    sentence = f"{subject} {verb}{rng.choice(_PLACES)}{rng.choice(_TIMES)}"
    return sentence[0].upper() + sentence[1:] + "."


def _base_form(verb_phrase: str) -> str:
    """Drop the third-person ``s`` ("watches the news" -> "watch the news") after I/we/they."""
    verb, _, rest = verb_phrase.partition(" ")
    base = verb[:-2] if verb.endswith(("shes", "ches", "xes")) else verb[:-1]
    return f"{base} {rest}".strip()


def _question(rng: random.Random) -> str:
    return rng.choice(_QUESTIONS).format(o=rng.choice(_OBJECTS))


# (generator, weight): long-tail templates dominate so that transcripts rarely repeat.
_GENERATORS: tuple[tuple[Callable[[random.Random], str], float], ...] = (
    (_digit, 0.10),
    (_number, 0.08),
    (_arithmetic, 0.08),
    (_count, 0.05),
    (_command, 0.09),
    (_sound_event, 0.20),
    (_emotion, 0.10),
    (_everyday, 0.22),
    (_question, 0.08),
)


def random_sentence(rng: random.Random) -> str:
    """One transcript drawn from the template grammar."""
    generators, weights = zip(*_GENERATORS, strict=True)
    return rng.choices(generators, weights=weights)[0](rng)


def make_synth_speech(out_dir: Path, n_clips: int, seed: int = 0) -> Path:
    """Synthesise ``n_clips`` clips into ``out_dir`` (``<voice>/<index>.flac`` + ``metadata.csv``).

    Voices cycle through :data:`~uniaudio_cli.synth.ENGLISH_VOICES` in a seeded order so every voice
    gets a near-equal share; speed, pitch and output level are drawn per clip. Existing files with
    the same names are overwritten. Returns the path of ``metadata.csv``.
    """
    if n_clips < 1:
        raise ValueError("n_clips must be at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    voices = list(ENGLISH_VOICES)
    rows: list[dict[str, object]] = []
    for i in range(n_clips):
        if i % len(voices) == 0:
            rng.shuffle(voices)  # a fresh order each round keeps voices balanced but not periodic
        voice = voices[i % len(voices)]
        text = random_sentence(rng)
        speed = rng.randint(*SPEED_RANGE)
        pitch = rng.randint(*PITCH_RANGE)
        peak = rng.uniform(*PEAK_RANGE)
        wav = synthesize(text, voice=voice, speed=speed, pitch=pitch, sample_rate=SAMPLE_RATE)
        wav = wav * np.float32(peak / max(float(np.abs(wav).max()), 1e-6))
        rel = Path(voice) / f"{i:05d}.flac"
        write_audio(out_dir / rel, wav, SAMPLE_RATE, force=True)
        rows.append(
            {
                "path": rel.as_posix(),
                "label": voice,
                "seconds": round(len(wav) / SAMPLE_RATE, 3),
                "text": text,
                "voice": voice,
                "speed": speed,
                "pitch": pitch,
            }
        )
    meta = out_dir / "metadata.csv"
    with meta.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METADATA_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return meta


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: generate the folder and print a one-line summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path, help="folder to write (created if needed)")
    parser.add_argument("--clips", type=int, default=1500, help="number of clips (default 1500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    meta = make_synth_speech(args.out_dir, args.clips, args.seed)
    with meta.open(newline="") as f:
        rows = list(csv.DictReader(f))
    total = sum(float(r["seconds"]) for r in rows)
    n_voices = len({r["label"] for r in rows})
    n_texts = len({r["text"] for r in rows})
    print(
        f"wrote {len(rows)} clips ({total / 60:.1f} min, {n_voices} voices, {n_texts} distinct texts) "
        f"to {args.out_dir} in {time.perf_counter() - t0:.1f} s"
    )


if __name__ == "__main__":
    main()
