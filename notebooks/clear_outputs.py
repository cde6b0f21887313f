"""Clear a notebook's outputs in place, or with --check fail if it has any (CI runs that).

    python notebooks/clear_outputs.py [--check] notebooks/goodhart.ipynb
"""
import sys

import nbformat

check = "--check" in sys.argv[1:]
paths = [a for a in sys.argv[1:] if a != "--check"]
dirty_files = []
for path in paths:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [c for c in nb.cells if c.cell_type == "code" and (c.outputs or c.execution_count or "execution" in c.metadata)]
    if dirty and check:
        dirty_files.append(f"{path} (cells {[c.get('id') for c in dirty]})")
    elif dirty:
        for c in dirty:
            c.outputs, c.execution_count = [], None
            c.metadata.pop("execution", None)
        nbformat.write(nb, path)
        print(f"{path}: cleared {len(dirty)} cells")
if dirty_files:
    sys.exit(f"error: notebook outputs are not committed; clear them with notebooks/clear_outputs.py: {', '.join(dirty_files)}")
