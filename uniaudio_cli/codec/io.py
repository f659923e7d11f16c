"""Encoded clips on disk: the JSON written by ``uniaudio encode --json`` and read by ``decode``.

Format ``uniaudio-codes``, version 1: one JSON object per file (``--out-dir``) or per line (JSON
Lines, ``--json``)::

    {"format": "uniaudio-codes", "version": 1,
     "path": "clip.wav", "sample_rate": 16000, "num_samples": 11200,
     "codec": {"source": "checkpoints/llm-codec-smollm2",
               "weights_sha256": "<SHA-256 of model.safetensors, or of the published .pth>",
               "vocabulary": "<embedding fingerprint of the LLM vocabulary, or null>"},
     "codes": [[layer-1 token ids], [layer-2 token ids], [layer-3 token ids]]}

``codec`` identifies the codec that wrote the codes; :meth:`Codec.decode_clip
<uniaudio_cli.codec.api.Codec.decode_clip>` refuses codes of another codec. Files without a
format/version (written before it existed), of a newer version, or malformed are refused with a
:class:`~uniaudio_cli.errors.CodesFormatError` naming the file (and line).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uniaudio_cli.errors import CodesFormatError

CODES_FORMAT = "uniaudio-codes"
CODES_VERSION = 1

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
FIX_MALFORMED = "pass a file written by `uniaudio encode --json` unchanged, or re-encode the audio"
FIX_REENCODE = "re-encode the audio with `uniaudio encode --json`"


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _malformed(source: str, what: str) -> CodesFormatError:
    return CodesFormatError(f"{source}: {what}", FIX_MALFORMED)


@dataclass(frozen=True)
class CodecIdentity:
    """Which codec wrote a set of codes.

    Attributes:
        source: where that codec was loaded from (shown in errors; not compared).
        weights_sha256: SHA-256 of its weights file (``model.safetensors`` or the published ``.pth``).
        vocabulary: embedding fingerprint of the LLM vocabulary its codes index (``None``: codes
            are codebook indices that do not depend on a loaded vocabulary, as for the published codec).
    """

    source: str
    weights_sha256: str
    vocabulary: str | None = None

    def same_codec(self, other: CodecIdentity) -> bool:
        """Same weights and same vocabulary (``source`` may differ: a copied folder is the same codec)."""
        return (self.weights_sha256, self.vocabulary) == (other.weights_sha256, other.vocabulary)

    def to_obj(self) -> dict[str, Any]:
        return {"source": self.source, "weights_sha256": self.weights_sha256, "vocabulary": self.vocabulary}

    @classmethod
    def from_obj(cls, obj: Any, source: str) -> CodecIdentity:
        """Parse and check the ``codec`` object of a codes file (``source`` names it in errors)."""
        if not isinstance(obj, dict):
            raise _malformed(source, "'codec' must be an object with source, weights_sha256 and vocabulary")
        weights, vocab, where = obj.get("weights_sha256"), obj.get("vocabulary"), obj.get("source", "")
        if not (isinstance(weights, str) and _HEX64.match(weights)):
            raise _malformed(source, "'codec.weights_sha256' must be 64 lower-case hex digits")
        if vocab is not None and not (isinstance(vocab, str) and _HEX64.match(vocab)):
            raise _malformed(source, "'codec.vocabulary' must be 64 lower-case hex digits or null")
        if not isinstance(where, str):
            raise _malformed(source, "'codec.source' must be a string")
        return cls(source=where, weights_sha256=weights, vocabulary=vocab)


@dataclass
class EncodedClip:
    """One clip as LLM token ids per layer (``codes[i]``: layer ``i + 1``), with the codec that wrote it."""

    path: str
    sample_rate: int
    codes: list[list[int]]
    num_samples: int | None = None
    codec: CodecIdentity | None = None

    def to_json(self) -> str:
        """One line of JSON in the ``uniaudio-codes`` format (see the module docstring)."""
        if self.codec is None:
            raise ValueError("an EncodedClip needs its codec identity to be written")
        obj: dict[str, Any] = {
            "format": CODES_FORMAT,
            "version": CODES_VERSION,
            "path": self.path,
            "sample_rate": self.sample_rate,
            "num_samples": self.num_samples,
            "codec": self.codec.to_obj(),
            "codes": self.codes,
        }
        return json.dumps(obj, separators=(",", ":"))

    @classmethod
    def from_obj(cls, obj: Any, source: str) -> EncodedClip:
        """Parse and check one decoded JSON object; :class:`CodesFormatError` naming ``source`` if
        it is not a complete ``uniaudio-codes`` object of a version this uniaudio reads."""
        if not isinstance(obj, dict):
            raise _malformed(source, f"expected a JSON object, found {type(obj).__name__}")
        fmt, version = obj.get("format"), obj.get("version")
        if fmt is None and version is None:
            raise CodesFormatError(
                f"{source}: codes without a format version (written by an older uniaudio)", FIX_REENCODE
            )
        if fmt != CODES_FORMAT:
            raise _malformed(source, f"format {fmt!r} is not {CODES_FORMAT!r}")
        if not _is_int(version) or version < 1:
            raise _malformed(source, f"'version' must be a positive integer, found {version!r}")
        if version > CODES_VERSION:
            raise CodesFormatError(
                f"{source}: {CODES_FORMAT} version {version} is newer than this uniaudio reads (up to {CODES_VERSION})",
                "upgrade uniaudio, or re-encode the audio with this version",
            )
        missing = [k for k in ("path", "sample_rate", "num_samples", "codec", "codes") if k not in obj]
        if missing:
            raise _malformed(source, f"missing {', '.join(repr(k) for k in missing)}")
        path, sr, n, codes = obj["path"], obj["sample_rate"], obj["num_samples"], obj["codes"]
        if not isinstance(path, str):
            raise _malformed(source, "'path' must be a string")
        if not _is_int(sr) or sr <= 0:
            raise _malformed(source, f"'sample_rate' must be a positive integer, found {sr!r}")
        if not _is_int(n) or n <= 0:
            raise _malformed(source, f"'num_samples' must be a positive integer, found {n!r}")
        if not (isinstance(codes, list) and codes and all(isinstance(c, list) and c for c in codes)):
            raise _malformed(source, "'codes' must be a list of non-empty integer lists, one per layer")
        for layer, c in enumerate(codes, 1):
            bad = next((x for x in c if not _is_int(x) or x < 0), None)
            if bad is not None:
                raise _malformed(source, f"layer {layer} holds {bad!r}, not a token id (a non-negative integer)")
        return cls(
            path=path, sample_rate=sr, codes=codes, num_samples=n, codec=CodecIdentity.from_obj(obj["codec"], source)
        )


def read_encoded(path: str | Path) -> list[EncodedClip]:
    """A ``.json`` file holding one object, or JSON Lines with one object per line."""
    path = Path(path)
    if not path.exists():
        raise CodesFormatError(f"{path}: no such file", "check the path")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CodesFormatError(f"{path}: not a readable JSON file ({e})", FIX_MALFORMED) from e
    if not text.strip():
        raise CodesFormatError(f"{path}: empty file", FIX_MALFORMED)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        pass
    else:
        return [EncodedClip.from_obj(obj, str(path))]
    clips = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CodesFormatError(f"{path}:{n}: invalid JSON ({e.msg})", FIX_MALFORMED) from e
        clips.append(EncodedClip.from_obj(obj, f"{path}:{n}"))
    return clips
