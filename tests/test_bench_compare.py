"""bench/classify_compare.py pairs episodes by key and refuses episodes drawn differently;
bench/codec_compare.py keys its kept reports on what changes a codec's output."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str = "classify_compare"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _results(path: Path, preds: list[list[str]], query_paths: list[str] | None = None) -> Path:
    lines = [{"type": "header", "format": "uniaudio-eval-results/1", "settings": {}}]
    for i, episode in enumerate(preds):
        queries = [
            {"path": (query_paths or ["a/1.flac", "b/2.flac"])[j], "label": "ab"[j], "pred": p}
            for j, p in enumerate(episode)
        ]
        record = {"demos": {"a": ["a/0.flac"], "b": ["b/0.flac"]}, "queries": queries}
        lines.append({"type": "record", "key": f"cfg/{i}", "record": record})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_paired_change_per_episode(tmp_path: Path) -> None:
    old = _results(tmp_path / "old.jsonl", [["a", "a"], ["a", "b"], ["b", "a"]])  # 50, 100, 0 %
    new = _results(tmp_path / "new.jsonl", [["a", "b"], ["a", "b"], ["b", "a"]])  # 100, 100, 0 %
    lines = _module().compare([old, new])
    assert lines[0] == "3 paired episodes"
    assert lines[1].endswith("old.jsonl: 50.0 %")
    assert "new.jsonl: 66.7 %, paired +16.7 ± 71.7 points (better on 1, worse on 0)" in lines[2]


def test_episodes_drawn_differently_are_refused(tmp_path: Path) -> None:
    old = _results(tmp_path / "old.jsonl", [["a", "b"]])
    new = _results(tmp_path / "new.jsonl", [["a", "b"]], query_paths=["a/9.flac", "b/2.flac"])
    with pytest.raises(ValueError, match="episode cfg/0 holds different demonstrations or queries"):
        _module().compare([old, new])


def test_codec_reports_are_kept_apart_when_the_config_changes_the_output(tmp_path: Path) -> None:
    digest = _module("codec_compare").weights_digest

    def codec(name: str, **config: object) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "config.json").write_text(json.dumps({"residual_search": "cosine", **config}))
        return folder

    plain = digest(codec("plain"))
    assert digest(codec("off", small_contrast=1.0)) == plain  # reports measured before the field existed stay valid
    filtered = digest(codec("pf", small_contrast=1.1))
    searched = digest(codec("euc", residual_search="euclidean"))
    envelope = digest(codec("env", small_contrast=1.1, small_contrast_smooth=17))
    assert digest(codec("pf0", small_contrast=1.1, small_contrast_smooth=0)) == filtered
    assert len({plain, filtered, searched, envelope}) == 4
