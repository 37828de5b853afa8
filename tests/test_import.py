import subprocess
import sys


def test_import_is_light():
    """`import pathexpand` loads neither torch, graphviz nor matplotlib."""
    code = (
        "import sys, pathexpand; "
        "heavy = [m for m in ('torch', 'graphviz', 'matplotlib') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


