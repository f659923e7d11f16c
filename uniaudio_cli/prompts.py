"""Prompt templates (data in ``prompts/``) rendered into LLM token ids.

A template is a JSON file of strings with ``{placeholders}``. Text placeholders (``{label}``,
``{labels}``, ``{answer}``, ``{text}``) are filled and tokenized; audio placeholders
(``{audio}``, ``{answer_audio}``) are replaced by the codec's token ids directly, never
re-tokenized, so the LLM reads exactly the codes.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from uniaudio_cli.errors import UsageError
from uniaudio_cli.paths import asset_dir

AUDIO_FIELDS = frozenset({"audio", "answer_audio"})


def prompts_dir() -> Path:
    return asset_dir("prompts")


@dataclass(frozen=True)
class PromptTemplate:
    """One task's prompt format (see the JSON files in ``prompts/``)."""

    name: str
    demo: str
    query: str
    induction: str = ""
    block: str = ""
    answer_prefix: str = " "
    label_format: str = "{label}"
    label_separator: str = ", "
    description: str = ""

    @classmethod
    def load(cls, name_or_path: str | Path) -> PromptTemplate:
        """Load ``prompts/<name>.json`` or a JSON file path."""
        p = Path(name_or_path)
        if p.suffix != ".json":
            p = prompts_dir() / f"{name_or_path}.json"
        if not p.is_file():
            raise UsageError(f"{p}: no such prompt template", f"pick one of {sorted(available_templates())}")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise UsageError(f"{p}: invalid JSON ({e.msg})", "fix the template file") from e
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown or "demo" not in data or "query" not in data:
            raise UsageError(
                f"{p}: template fields {unknown or 'demo/query missing'}",
                f"a template holds {sorted(known)}",
            )
        return cls(**data)


def available_templates() -> list[str]:
    """Names of the templates in ``prompts/`` (other JSON data there, e.g. example lists, is left out)."""
    names = []
    for p in prompts_dir().glob("*.json"):
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "demo" in data and "query" in data:
            names.append(p.stem)
    return sorted(names)


def bos_ids(tokenizer: Any) -> list[int]:
    """The special tokens ``tokenizer`` puts before a sequence (e.g. LLaMA's ``<s>``).

    Decided by probing what the tokenizer does, not by ``add_bos_token``: in transformers 5
    that flag is False for tokenizer.json tokenizers whose post-processor adds the BOS
    (e.g. Llama 3), so trusting it would drop the BOS the model was trained with.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    probe = tokenizer("a", add_special_tokens=True).input_ids
    return [bos] if probe and probe[0] == bos else []


class PromptBuilder:
    """Renders templates to token ids with one tokenizer; text pieces are cached."""

    def __init__(self, tokenizer: Any, template: PromptTemplate) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self._encode = lru_cache(maxsize=4096)(self._encode_uncached)

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False)) if text else ()

    def text(self, text: str) -> list[int]:
        """Token ids of a text piece (no special tokens)."""
        return list(self._encode(text))

    def bos(self) -> list[int]:
        """The special tokens the tokenizer puts before a sequence (see :func:`bos_ids`)."""
        return bos_ids(self.tokenizer)

    def render(self, fmt: str, audio: dict[str, Sequence[int]] | None = None, **text: str) -> list[int]:
        """Fill ``fmt``: text fields are formatted and tokenized, audio fields spliced in as ids."""
        audio = audio or {}
        out: list[int] = []
        chunk = ""
        for literal, name, spec, conv in string.Formatter().parse(fmt):
            chunk += literal
            if name is None:
                continue
            if name in AUDIO_FIELDS:
                if name not in audio:
                    raise UsageError(f"template {self.template.name}: no audio for {{{name}}}", "report this bug")
                out += self.text(chunk)
                chunk = ""
                out += list(audio[name])
            else:
                if name not in text:
                    raise UsageError(
                        f"template {self.template.name}: unknown field {{{name}}}",
                        f"use only {sorted(set(text) | AUDIO_FIELDS)}",
                    )
                chunk += format(text[name], spec or "") if not conv else str(text[name])
        return out + self.text(chunk)

    def head(self, fmt: str, field: str = "audio") -> list[int]:
        """Ids of ``fmt`` up to its ``{field}`` (e.g. ``"Input: <"`` of a query), tokenized as
        :meth:`render` tokenizes it."""
        literal = fmt.split("{" + field + "}", 1)[0]
        if "{" in literal:
            raise UsageError(f"template {self.template.name}: fields before {{{field}}}", "report this bug")
        return self.text(literal)

    def induction(self, labels: Sequence[str] = ()) -> list[int]:
        t = self.template
        if not t.induction:
            return []
        joined = t.label_separator.join(t.label_format.format(label=lbl) for lbl in labels)
        return self.render(t.induction, labels=joined)

    def answer(self, answer: str) -> list[int]:
        """Ids of an answer as it follows the query (``answer_prefix`` + answer)."""
        return self.text(self.template.answer_prefix + answer)

    def text_demos(self, examples: Sequence[tuple[str, str]]) -> list[int]:
        """Ids of a text-only few-shot prompt: the BOS, the induction line, then each
        ``(text, answer)`` demonstration rendered with the template's ``demo``."""
        t = self.template
        ids = self.bos() + self.render(t.induction)
        for text, answer in examples:
            ids += self.render(t.demo, text=text, answer=answer)
        return ids


@dataclass(frozen=True)
class AnswerExamples:
    """The data of the default TTS mode's text step (``prompts/<name>.json``): ``(question,
    answer)`` examples and the content-free questions whose answers measure each prompt's prior
    (see :class:`uniaudio_cli.tasks.tts.TextAnswerer`)."""

    examples: tuple[tuple[str, str], ...]
    content_free: tuple[str, ...] = ()

    @classmethod
    def load(cls, name_or_path: str | Path) -> AnswerExamples:
        p = Path(name_or_path)
        if p.suffix != ".json":
            p = prompts_dir() / f"{name_or_path}.json"
        try:
            data = json.loads(p.read_text())
            examples = tuple((str(q), str(a)) for q, a in data["examples"])
            content_free = tuple(str(c) for c in data.get("content_free", ()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UsageError(
                f"{p}: not a list of text examples ({e})", 'give {"examples": [[question, answer], ...]}'
            ) from e
        return cls(examples, content_free)
