"""The wheel is the product: it carries the prompts and the default codec and finds them once installed."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import uniaudio_cli
from uniaudio_cli.paths import default_codec_path
from uniaudio_cli.prompts import available_templates, prompts_dir

ROOT = Path(__file__).resolve().parents[1]
CODEC = "llm-codec-smollm2"
CODEC_FILES = ["config.json", "model.safetensors", "prototype_center.safetensors", "README.md"]
SOURCES = ["pyproject.toml", "README.md", "uniaudio_cli", "prompts", "checkpoints"]


def _setuptools_major() -> int:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 0


def _shipped_prompt_data() -> list[str]:
    """Every data file under the repository's prompts/ (the scripts and __init__.py aside)."""
    return sorted(
        p.relative_to(ROOT / "prompts").as_posix()
        for p in (ROOT / "prompts").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources (offline, no build isolation: leaves no build/ here)."""
    if _setuptools_major() < 77:
        pytest.skip("building the wheel needs setuptools>=77 (in the dev extras)")
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(p, src / name)
    out = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    res = subprocess.run([*cmd, "-w", str(out), str(src)], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    wheels = list(out.glob("uniaudio-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_the_codec_the_prompts_and_every_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    codec = f"uniaudio_cli/assets/checkpoints/{CODEC}"
    assert {f"{codec}/{f}" for f in CODEC_FILES} <= names
    prompts = _shipped_prompt_data()
    assert {"classify_paper.json", "tts_answer.json", "tts_answer_examples.json"} <= set(prompts)
    assert sum(p.startswith("tts_digits/") and p.endswith(".flac") for p in prompts) >= 10
    assert any(p.startswith("denoise_pairs/") and p.endswith(".flac") for p in prompts)
    missing = [p for p in prompts if f"uniaudio_cli/assets/prompts/{p}" not in names]
    assert not missing, f"prompt data left out of the wheel (package-data in pyproject.toml): {missing}"
    modules = sorted(
        p.relative_to(ROOT).as_posix() for p in (ROOT / "uniaudio_cli").rglob("*.py") if "__pycache__" not in p.parts
    )
    missing = [m for m in modules if m not in names]
    assert not missing, f"modules left out of the wheel (list their package in pyproject.toml): {missing}"


def test_installed_wheel_finds_its_data_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    probe = (
        "import json, uniaudio_cli; from uniaudio_cli.paths import default_codec_path, project_root;"
        "from uniaudio_cli.prompts import available_templates, prompts_dir;"
        "print(json.dumps([uniaudio_cli.__file__, str(default_codec_path()), str(prompts_dir()),"
        " available_templates(), project_root()]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "UNIAUDIO_CODEC"}
    env["PYTHONPATH"] = str(site)
    res = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    init, codec, prompts, templates, root = json.loads(res.stdout)
    assert Path(init).is_relative_to(site)
    assert Path(codec) == site / "uniaudio_cli/assets/checkpoints" / CODEC
    assert all((Path(codec) / f).is_file() for f in CODEC_FILES)
    assert Path(prompts) == site / "uniaudio_cli/assets/prompts"
    assert (Path(prompts) / "tts_digits").is_dir() and (Path(prompts) / "denoise_pairs").is_dir()
    assert "classify_paper" in templates
    assert root is None  # no source checkout: nothing is read from one


def test_default_codec_path_resolves_and_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("UNIAUDIO_CODEC", raising=False)
    codec = default_codec_path()
    assert codec.is_dir() and codec.name == CODEC
    assert all((codec / f).is_file() for f in CODEC_FILES)
    assert (prompts_dir() / "tts_digits").is_dir() and "tts_answer" in available_templates()
    monkeypatch.setenv("UNIAUDIO_CODEC", str(tmp_path / "mine"))
    assert default_codec_path() == tmp_path / "mine"


@pytest.mark.skipif(not os.environ.get("UNIAUDIO_TEST_WHEEL"), reason="only where the wheel is installed (.ci/run)")
def test_the_tests_import_the_installed_wheel() -> None:
    """.ci/run sets UNIAUDIO_TEST_WHEEL: the suite must exercise the wheel, not the checkout's sources."""
    assert Path(uniaudio_cli.__file__).resolve().parent != (ROOT / "uniaudio_cli").resolve(), uniaudio_cli.__file__
    direct_url = importlib.metadata.distribution("uniaudio").read_text("direct_url.json") or "{}"
    assert not json.loads(direct_url).get("dir_info", {}).get("editable"), direct_url
