"""Re-execute chosen cells of a committed notebook in place, keeping every other cell's recorded output.

For cells that only read a recorded run (docs/.../*.json, *.csv) after that run was extended: the full-size
notebook takes far longer than those cells, and their output is what the code prints from the new file. The
setup cells (imports, constants) run first; only the target cells' outputs are replaced.

    python scripts/refresh_notebook_cells.py notebooks/vision_heads.ipynb --setup 1 --cells 18
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--setup", default="", help="Comma-separated cell indices run first (outputs kept).")
    parser.add_argument("--cells", required=True, help="Comma-separated cell indices whose outputs are replaced.")
    args = parser.parse_args()
    nb = nbformat.read(args.notebook, as_version=4)
    setup = [int(i) for i in args.setup.split(",") if i.strip()]
    cells = [int(i) for i in args.cells.split(",") if i.strip()]
    for i in setup + cells:
        if not 0 <= i < len(nb.cells) or nb.cells[i].cell_type != "code":
            raise SystemExit(f"cell {i} is not a code cell of {args.notebook} (it has {len(nb.cells)} cells)")
    work = nbformat.read(args.notebook, as_version=4)  # setup cells run in a copy: their outputs stay as recorded
    client = NotebookClient(work, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(args.notebook.parent)}})  # fmt: skip
    with client.setup_kernel():
        for i in setup + cells:
            client.execute_cell(work.cells[i], i)
            errors = [o for o in work.cells[i].outputs if o.output_type == "error"]
            if errors:
                raise SystemExit(f"cell {i} failed: {errors[0].get('ename')}: {errors[0].get('evalue')}")
    for i in cells:
        nb.cells[i].outputs = work.cells[i].outputs
        nb.cells[i].execution_count = work.cells[i].execution_count
    nbformat.write(nb, args.notebook)
    print(f"refreshed cells {cells} of {args.notebook}")


if __name__ == "__main__":
    main()
