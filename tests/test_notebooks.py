"""Execute the notebooks at small sizes, so CI proves they run on the public API."""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOKS = os.path.join(HERE, "..", "notebooks")


@pytest.mark.parametrize("name", ["quickstart.ipynb", "scaling.ipynb"])
def test_notebook_runs(name, monkeypatch):
    monkeypatch.setenv("JAXSTATS_NB_SMALL", "1")
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "speed-up" in text or "agents alarmed" in text
