"""`import edgeprune` and `edgeprune --help` must not import TensorFlow (see edgeprune/_tf.py)."""

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_import_does_not_import_tensorflow():
    mods = _modules_after("import edgeprune, edgeprune.cli, edgeprune.targets, edgeprune.recipe")
    assert "edgeprune.cli" in mods
    assert not {m for m in mods if m.split(".")[0] in ("tensorflow", "tf_keras", "keras")}


def test_help_does_not_import_tensorflow():
    code = (
        "from click.testing import CliRunner\n"
        "from edgeprune.cli import main\n"
        "r = CliRunner().invoke(main, ['--help'])\n"
        "assert r.exit_code == 0 and 'build' in r.output, r.output\n"
        "r = CliRunner().invoke(main, ['build', '-h'])\n"
        "assert r.exit_code == 0 and '--sparsity' in r.output, r.output\n"
    )
    mods = _modules_after(code)
    assert "edgeprune.cli" in mods
    assert "tensorflow" not in mods
