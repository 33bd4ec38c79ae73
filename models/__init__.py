"""Shipped model specs and the loader that resolves `--model NAME|PATH`."""
from __future__ import annotations

from pathlib import Path

from fwbench.models.spec import (LAYER_TYPES, Conv2D, Dense, Flatten, Layer, MaxPool2D, ModelSpec, ReLU, Sigmoid,
                                 SpecError, Tanh, parse)
from fwbench.models.spec_file import load

HERE = Path(__file__).parent

__all__ = ["LAYER_TYPES", "Conv2D", "Dense", "Flatten", "Layer", "MaxPool2D", "ModelSpec", "ReLU", "Sigmoid",
           "SpecError", "Tanh", "get", "load", "parse", "shipped"]


def shipped() -> list[str]:
    """Names of the specs that ship with fwbench."""
    return sorted(p.stem for p in HERE.glob("*.toml"))


def get(name_or_path: str | Path) -> ModelSpec:
    """A shipped spec by name, or any spec by TOML path."""
    text = str(name_or_path)
    if text in shipped():
        return load(HERE / f"{text}.toml")
    # An empty name would otherwise be the current directory.
    if text and (text.endswith(".toml") or Path(text).exists()):
        return load(text)
    raise SpecError(f"unknown model '{text}'; choose one of {', '.join(shipped())} or give a path to a .toml spec")
