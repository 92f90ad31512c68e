"""notebooks/quickstart.ipynb runs on the CPU (nbclient) with a shrunk config injected after its parameters cell."""

import nbclient  # the test extra: nbclient, nbformat, ipykernel
import nbformat

from tests.conftest import REPO, tiny_model, tiny_train

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def with_parameters(notebook, **values):
    """The notebook with a cell setting `values` right after the cell tagged `parameters` (as papermill does)."""
    (index,) = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    return notebook


def test_the_quickstart_notebook_trains_evaluates_exports_and_predicts(tmp_path, tiny_vocab, data_dir):
    notebook = with_parameters(
        nbformat.read(NOTEBOOK, as_version=4), INSTALL=False, USE_TPU=False, DATA_DIR=str(data_dir),
        MODEL=tiny_model(tiny_vocab), TRAIN=tiny_train(max_steps=4, eval_every_steps=2), MAX_EXAMPLES=64,
        RUN_DIR=str(tmp_path / "run"))
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "CPU only {}" in printed and "data: files in " in printed
    assert "dev accuracy " in printed and "after 4 steps" in printed
    assert (tmp_path / "run" / "export" / "sst2" / "1" / "saved_model.pb").exists()
    assert printed.count("  a gripping, beautifully acted film") == 1
