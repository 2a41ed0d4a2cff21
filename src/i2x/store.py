"""The run directory: atomic array/JSON writes, a manifest written last, schema checks.

Layout (documented in ``docs/SCHEMA.md``)::

    DIR/manifest.json            schema version, config, versions, seeds, timings, metrics, stages
    DIR/record/explain_set.npz   indices (N,) into the training set, labels (N,)
    DIR/record/ckpt_TTTT.npz     one per checkpoint: sample_index (N,), confidences (N,C), saliency (N,H,W)
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
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RunDirError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write arrays to ``path`` (.npz, uncompressed) atomically."""
    path = Path(path)
    _atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return path


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an .npz into memory; a truncated or corrupt file raises RunDirError."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"missing array file {path}: re-run the stage that writes it (i2x run --resume)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise RunDirError(
            f"array file {path} is corrupt or truncated ({exc}); delete it and run `i2x run --resume`"
        ) from None


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
    data = json.dumps(obj, indent=2, sort_keys=False, default=_json_default).encode()
    _atomic_write(path, lambda fh: fh.write(data + b"\n"))
    return path


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
