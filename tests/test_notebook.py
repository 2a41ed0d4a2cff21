"""The README's Python API in a notebook (issue 26): executed by nbclient in a fresh kernel; no error
output, a run that shows a summary table, and progress that does not flood the cell (no ipywidgets)."""

from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

CELLS = [
    "import numpy as np, torch\nimport i2x",
    "run = i2x.run(out={out!r}, dataset='digits', epochs=2, every=5, prototypes=6, min_cluster_size=5,\n"
    "              device='cpu', stability_resamples=2, report=False)",
    "run",
    "ex = run.explanations()\nprint(sorted(ex)[:3], len(ex['pairs']))",
    "from i2x.nn.models import load_model\nmodel = load_model(run.path)\n"
    "images = torch.from_numpy(run.explain_set()['images'][:4])\n"
    "maps = i2x.saliency(model, images, [0, 1, 2, 3])\nmaps.shape",
    "len(run.pair_explanation(0, 1)['uncertain'])",
]


def test_the_python_api_runs_cleanly_in_a_notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.format(out=str(tmp_path / "nb-run"))) for c in CELLS]
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    html = [o["data"]["text/html"] for o in nb.cells[2]["outputs"] if "text/html" in o.get("data", {})]
    assert html and "<table>" in html[0] and "test accuracy" in html[0]
    stream = "".join(o.get("text", "") for o in nb.cells[1]["outputs"] if o["output_type"] == "stream")
    assert stream.count("\r") + stream.count("\n") < 60  # progress updates about every 5 s, not per iteration
    assert "\x1b[" not in stream  # no terminal escape codes (nested bars without widgets)
    assert "(4, 4, 4)" in "".join(str(o.get("data", {})) for o in nb.cells[4]["outputs"])  # the deepest 4x4 map
