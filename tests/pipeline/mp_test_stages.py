"""Stages for the pipeline tests, loaded through a spec's ``plugins:`` list (trusted code the user names).

* ``mp_test_count``  passes the model through and appends one line to ``counter`` each time it really runs, so a
  test can prove that a cached stage was not recomputed.
* ``mp_test_pause``  writes ``marker`` and then sleeps (so a test can kill the run mid-stage) unless ``marker``
  already exists, in which case it passes the model through at once.
* ``mp_test_unavailable``  raises BackendUnavailable, like a stage whose optional backend is not installed.

:func:`register` / :func:`unregister` let a test fixture keep these out of the registry for every other test.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from modelpress.compress import registry
from modelpress.errors import BackendUnavailable, InputError


@dataclass(frozen=True)
class CountConfig(registry.StageConfig):
    kind: ClassVar[str] = "mp_test_count"
    counter: str = ""
    label: str = "count"

    def __post_init__(self) -> None:
        if not self.counter:
            raise InputError("mp_test_count.counter must name a file")


@dataclass(frozen=True)
class PauseConfig(registry.StageConfig):
    kind: ClassVar[str] = "mp_test_pause"
    marker: str = ""
    seconds: float = 120.0


@dataclass(frozen=True)
class UnavailableConfig(registry.StageConfig):
    kind: ClassVar[str] = "mp_test_unavailable"


def _passthrough(artifact):
    module = copy.deepcopy(artifact.module) if artifact.module is not None else None
    return artifact.evolve(module=module)


def run_count(artifact, config, ctx):
    with open(config.counter, "a", encoding="utf-8") as handle:
        handle.write(f"{config.label}\n")
    return _passthrough(artifact)


def run_pause(artifact, config, ctx):
    marker = Path(config.marker)
    if not marker.exists():
        (ctx.work_dir / "half-written.bin").write_bytes(b"x" * 1024)  # what a killed stage leaves behind
        marker.write_text("started\n", encoding="utf-8")
        deadline = time.monotonic() + config.seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
    return _passthrough(artifact)


def run_unavailable(artifact, config, ctx):
    raise BackendUnavailable("mp_test_unavailable needs a backend that is not installed")


_STAGES = {CountConfig: run_count, PauseConfig: run_pause, UnavailableConfig: run_unavailable}


def register() -> None:
    for cls, fn in _STAGES.items():
        registry.register_stage(cls)(fn)


def unregister() -> None:
    for cls in _STAGES:
        registry.STAGES.pop(cls.kind, None)


register()
