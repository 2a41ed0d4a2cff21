"""``DIR/manifest.json``: the one writer of a run's manifest. numpy-free, torch-free.

A :class:`Manifest` owns the manifest's fields: it is made once per command (:meth:`Manifest.new`,
from the settings, the data and the model, keeping a resumed run's stages, timings and metrics),
then changes only through :meth:`Manifest.record` (a stage's :class:`StageOutput`, called by the
stage runner :func:`i2x.rundir.run_stages`) and :meth:`Manifest.warn`, and reaches the disk only
through :meth:`Manifest.write`. Stages and the hooks of the torch side return what they produced;
none of them writes into the manifest. Readers (:class:`i2x.rundir.Run`, the report) read the
plain dict that :func:`i2x.store.read_manifest` returns.

Fields (docs/SCHEMA.md): ``versions``, ``stages`` (per stage: complete, files, settings),
``timings`` (seconds per stage), ``metrics``, ``config``, ``seeds``, ``data``, ``model``,
``distributed``, ``schedule``, ``checkpoints`` (the recorded iterations), ``warnings``,
``schema_version`` (added by :func:`i2x.store.write_manifest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import store


@dataclass
class StageOutput:
    """What a stage produced: the files it wrote (relative to the run directory) and the entries
    of the manifest they add (merged into ``metrics``, ``data``, ``model``, ``timings``)."""

    files: list[str]
    metrics: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)  # extra timings (before the stage's own)
    warnings: list[str] = field(default_factory=list)
    checkpoints: list[int] | None = None  # the recorded iterations (the record stage)


class Manifest:
    """The manifest of one run directory while a command works on it (see the module docstring)."""

    def __init__(self, doc: dict):
        self._doc = doc

    @classmethod
    def new(
        cls,
        config: dict,
        seeds: dict,
        data: dict,
        model: dict,
        old: dict | None = None,
        *,
        warnings: tuple[str, ...] = (),
        **fields: Any,
    ) -> Manifest:
        """A resumed run's own manifest ``old`` (stages, timings, metrics kept) or a new one, with this
        call's settings, seeds, data and model descriptions (merged into the old ones), ``warnings``
        and other top-level ``fields`` (``distributed``, ``schedule``, ``checkpoints``)."""
        d = old or {"versions": store.library_versions(), "stages": {}, "timings": {}, "metrics": {}}
        d["config"] = config
        d["seeds"] = seeds
        d["data"] = {**d.get("data", {}), **data}
        d["model"] = {**d.get("model", {}), **model}
        d.update(fields)
        m = cls(d)
        for w in warnings:
            m.warn(w)
        return m

    def record(self, stage: str, out: StageOutput, seconds: float, settings: dict) -> None:
        """Stage ``stage`` is complete: its timing, files, the settings it read and its outputs."""
        d = self._doc
        timings = d.setdefault("timings", {})
        timings.update(out.timings)
        timings[stage] = round(seconds, 3)
        d.setdefault("stages", {})[stage] = {"complete": True, "files": list(out.files), "settings": settings}
        d.setdefault("metrics", {}).update(out.metrics)
        d.setdefault("data", {}).update(out.data)
        d.setdefault("model", {}).update(out.model)
        for w in out.warnings:
            self.warn(w)
        if out.checkpoints is not None:
            d["checkpoints"] = list(out.checkpoints)

    def warn(self, text: str) -> None:
        """Record a warning (the summary, `i2x explain` and the report show them), once."""
        ws = self._doc.setdefault("warnings", [])
        if text not in ws:
            ws.append(text)

    def write(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/manifest.json`` atomically (the only place a manifest is written)."""
        return store.write_manifest(run_dir, self._doc)

    # readers
    def get(self, key: str, default=None):
        return self._doc.get(key, default)

    def __getitem__(self, key: str):
        return self._doc[key]

    def __contains__(self, key: str) -> bool:
        return key in self._doc

    @property
    def checkpoints(self) -> list[int] | None:
        return self._doc.get("checkpoints")

    def to_dict(self) -> dict:
        """The manifest as the plain dict that is written (a reference: do not change it)."""
        return self._doc
