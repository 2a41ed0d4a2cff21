"""Files of a run directory: atomic array/JSON writes, checkpoint records, the manifest, schema checks.

Layout (documented in ``docs/SCHEMA.md``)::

    DIR/manifest.json            schema version, config, versions, seeds, timings, metrics, stages
    DIR/record/explain_set.npz   indices (N,) into the training set, labels (N,), images (N, C, H, W)
                                 float32, normalised: what the model saw (one writer, save_explain_set)
    DIR/record/ckpt_itIIIIIII.npz one per checkpoint (or shard): sample_index (N,), confidences (N,C), saliency (N,H,W)
    DIR/weights/final.pt         self-describing checkpoint dict of the final model
    DIR/arrays/<stage>.npz       one file per analysis stage
    DIR/explanations.json        structured explanations

Every file is written to a temporary name in the same folder and renamed (``os.replace`` is
atomic on POSIX), so a reader never sees half a file; the manifest lists which stages are
complete and is itself written last.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import I2XError, RunDirError, StorageError, errno_in

SCHEMA_VERSION = 3  # 2: p-values, background, selective containment (issue 11); 3: E stored as float32 (issue 22)
MANIFEST = "manifest.json"
EXPLAIN_SET = "record/explain_set.npz"


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` atomically: to a temporary file in the same folder, fsync'd, then renamed
    (``os.replace`` is atomic on POSIX), so a reader never sees half a file. ``data`` is bytes,
    text (UTF-8) or a function that writes into the open binary file."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    write = (lambda fh: fh.write(data)) if isinstance(data, bytes) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary readable files
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if _is_write_failure(exc):
            raise StorageError(path, exc) from exc
        raise
    return path


def _is_write_failure(exc: BaseException) -> bool:
    """An OSError, or torch's RuntimeError around one ("PytorchStreamWriter failed writing ...")."""
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, RuntimeError) and ("writ" in str(exc).lower() or errno_in(exc) is not None)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write arrays to ``path`` (.npz, uncompressed) atomically."""
    path = Path(path)
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_npz(path: str | os.PathLike, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Load the arrays of an .npz (only ``keys`` when given) into memory; a missing, truncated
    or corrupt file raises RunDirError."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"missing array file {path}: re-run the stage that writes it (i2x run --resume)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in (z.files if keys is None else keys)}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise RunDirError(
            f"array file {path} is corrupt or truncated ({exc}); delete it and run `i2x run --resume`"
        ) from None


# record/ckpt_it{iteration:07d}[-shard{r}].npz, one file (or one per shard) per checkpoint
_CKPT = re.compile(r"ckpt_it(\d{7})(?:-shard(\d+))?\.npz$")


def _record_files(run_dir: str | os.PathLike) -> dict[int, list[Path]]:
    by_it: dict[int, list[Path]] = {}
    for p in sorted((Path(run_dir) / "record").glob("ckpt_it*.npz")):
        m = _CKPT.search(p.name)
        if m:
            by_it.setdefault(int(m.group(1)), []).append(p)
    return by_it


def checkpoint_iterations(run_dir: str | os.PathLike) -> list[int]:
    """Training iterations of the checkpoints recorded in ``run_dir/record``, ascending."""
    return sorted(_record_files(run_dir))


def load_records(
    run_dir: str | os.PathLike, saliency: str = "all", expected: list[int] | None = None
) -> dict[str, np.ndarray]:
    """Stack every checkpoint of ``run_dir/record`` (shards merged, rows sorted by sample index).

    Returns ``iterations`` (T+1,), ``sample_index`` (N,), ``confidences`` (T+1, N, C) and
    ``saliency``: (T+1, N, H', W') with ``saliency="all"``, the final checkpoint's only as
    (1, N, H', W') with ``"last"`` (the report), absent with ``"none"``. ``expected``: the
    iterations the manifest lists; a missing one is a RunDirError naming the file and the fix.
    """
    if saliency not in ("all", "last", "none"):
        raise ValueError(f"saliency={saliency!r} must be 'all', 'last' or 'none'")
    by_it = _record_files(run_dir)
    d = Path(run_dir) / "record"
    if not by_it:
        raise RunDirError(f"no checkpoint records in {d}: run `i2x run` (or a Recorder) first")
    its = sorted(by_it)
    lost = sorted(set(expected or []) - set(its))
    if lost:
        raise RunDirError(
            f"{d / f'ckpt_it{lost[0]:07d}.npz'} is missing ({len(lost)} of {len(expected)} checkpoint records lost): "
            "a checkpoint cannot be re-recorded after training; restore the file, or start over with "
            f"`i2x run --out {Path(run_dir)} --overwrite` (same seed and thread count = the same run)"
        )
    ref, conf, sal = None, [], []
    for it in its:
        want_sal = saliency == "all" or (saliency == "last" and it == its[-1])
        keys = ("sample_index", "confidences") + (("saliency",) if want_sal else ())
        parts = [load_npz(p, keys) for p in by_it[it]]
        idx = np.concatenate([q["sample_index"] for q in parts])
        order = np.argsort(idx, kind="stable")
        if ref is not None and not np.array_equal(ref, idx[order]):
            raise RunDirError(
                f"checkpoint iteration {it} in {d} covers other samples than the first one: "
                "a shard is missing; re-run the recording with --resume"
            )
        ref = idx[order]
        conf.append(np.concatenate([q["confidences"] for q in parts])[order])  # (N, C)
        if want_sal:
            sal.append(np.concatenate([q["saliency"] for q in parts])[order])  # (N, H', W')
    out = {"iterations": np.asarray(its, dtype=np.int64), "sample_index": ref, "confidences": np.stack(conf)}
    if sal:
        out["saliency"] = np.stack(sal)
    return out


def save_explain_set(run_dir: str | os.PathLike, images, labels, indices=None) -> Path:
    """Write the explanation set E of ``run_dir`` (the one writer of ``record/explain_set.npz``):
    ``images`` (N, C, H, W) as the model is fed them (normalised) in float32, ``labels`` (N,) int64,
    ``indices`` (N,) into the training set (default 0..N-1). The report un-normalises the images
    with the manifest's ``data.mean`` / ``data.std``."""
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    indices = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
    if images.ndim != 4 or not len(images) == len(labels) == len(indices):
        raise I2XError(
            f"the explanation set must be (N, C, H, W) images with N labels and indices; got images "
            f"{images.shape}, {len(labels)} labels, {len(indices)} indices"
        )
    return save_npz(Path(run_dir) / EXPLAIN_SET, indices=indices, labels=labels, images=images)


def load_explain_set(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """``indices``, ``labels`` and ``images`` (float32, normalised) of the run's explanation set."""
    return load_npz(Path(run_dir) / EXPLAIN_SET)


def readable(path: str | os.PathLike) -> bool:
    """True when ``path`` exists and parses (.npz: every array reads; .json: valid JSON).

    Used on resume: a stage whose file is corrupt or truncated is redone, never read as data.
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                for k in z.files:
                    z[k]
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".pt":
            with zipfile.ZipFile(path) as zf:  # torch.save writes a zip archive
                return zf.testzip() is None
    except Exception:
        return False
    return True


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    path = Path(path)
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"missing {path}: is this an i2x run directory? (run `i2x run --out DIR` first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path} is corrupt ({exc}); delete it and run `i2x run --resume`") from None


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_manifest(run_dir: str | os.PathLike) -> dict:
    """Read and validate ``DIR/manifest.json`` (schema version included)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist: pass the --out DIR of an `i2x run`")
    m = load_json(run_dir / MANIFEST)
    v = m.get("schema_version")
    if v != SCHEMA_VERSION:
        raise RunDirError(
            f"{run_dir} was written with schema version {v}, this i2x reads version "
            f"{SCHEMA_VERSION}: re-run `i2x run --out {run_dir} --overwrite` with this version"
        )
    return m


def write_manifest(run_dir: str | os.PathLike, manifest: dict) -> Path:
    manifest = dict(manifest)
    manifest["schema_version"] = SCHEMA_VERSION
    return save_json(Path(run_dir) / MANIFEST, manifest)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in ("i2x", "torch", "torchvision", "numpy", "scikit-learn", "matplotlib"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out
