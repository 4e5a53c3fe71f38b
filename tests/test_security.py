"""The security promises of SECURITY.md, each proved here (or in the test SECURITY.md names).

Canaries make the proofs concrete: a module that writes a marker file when imported, a lambda
that writes one when run, a pickle that writes one when loaded. Each is refused, and the marker
is checked to be absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import re
import shlex
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sshd import running_sshd

from edgeprune import _tf, data, model_io
from edgeprune.deploy.linux import check_remote_dir, flash_linux, read_manifest, safe_relative
from edgeprune.device import parse_ssh
from edgeprune.errors import BadInputError, DataError, ModelLoadError, RecipeError, TargetError
from edgeprune.recipe import resolve_recipe
from edgeprune.targets import load_target

PACKAGE = Path(__file__).resolve().parents[1] / "edgeprune"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _with_config(src: Path, dest: Path, mutate) -> Path:
    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    mutate(config)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(dest, "w") as z:
        for name, blob in files.items():
            z.writestr(name, blob)
    return dest


# -- model files -------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_code_never_runs_without_trust_model(tmp_path, suffix):
    keras = _tf.keras()
    marker = tmp_path / "lambda-ran"
    code = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")  # the payload
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(code, name="payload")(inputs)
    path = tmp_path / f"m{suffix}"
    keras.Model(inputs, keras.layers.Dense(2)(x)).save(path)
    marker.unlink()  # building the model ran the lambda once; loading must not
    with pytest.raises(ModelLoadError, match="payload.*--trust-model"):
        model_io.load_model(path)
    assert not marker.exists()
    model_io.load_model(path, trust_model=True)
    assert marker.exists(), "the canary is live: trusting the file does run its code"


def test_module_named_in_config_is_never_imported(tiny_files, tmp_path, monkeypatch):
    name = "edgeprune_security_canary"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)

    def point_at_canary(config):  # the model class, from the canary module
        config.update(module=name, class_name="CanaryModel", registered_name=None)

    path = _with_config(tiny_files["model"], tmp_path / "m.keras", point_at_canary)
    with pytest.raises(ModelLoadError, match=f"module '{name}'.*--trust-model"):
        model_io.load_model(path)
    assert not marker.exists() and name not in sys.modules
    with contextlib.suppress(ModelLoadError):  # Keras imports it, whatever happens next
        model_io.load_model(path, trust_model=True)
    assert marker.exists(), "the canary is live: Keras imports modules a config names"


@pytest.mark.parametrize(("function", "refused"), [
    ("math.add", False), ("__operators__.getitem", False), ("nn.relu", False),
    ("reshape", False), ("io.write_file", True), ("io.read_file", True),
    ("raw_ops.WriteFile", True), ("py_function", True), ("compat.v1.py_func", True),
    ("numpy_function", True), ("summary.write", True), (None, True),
])
def test_op_layers_may_call_only_tensor_math(function, refused):
    config = {"class_name": "TFOpLambda", "config": {"name": "op", "function": function}}
    assert bool(model_io.untrusted_parts({"layers": [config]})) == refused


@pytest.mark.parametrize("cls", ["ClassMethod", "InstanceMethod", "InstanceProperty"])
def test_layers_calling_named_attributes_are_refused(cls):
    config = {"class_name": cls, "config": {"name": "a", "attr_name": "__class__"}}
    assert model_io.untrusted_parts([config]) == [
        f"{cls} layer 'a' (calls an attribute named in the file)"]


def test_savedmodel_with_file_reading_graph_op_is_refused(tmp_path):
    from tensorflow.core.framework import node_def_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    keras = _tf.keras()
    inputs = keras.Input((4,))
    path = tmp_path / "sm"
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(path, save_format="tf")
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    fn = proto.meta_graphs[0].graph_def.library.function[0]
    fn.node_def.append(node_def_pb2.NodeDef(name="steal", op="ReadFile"))
    (path / "saved_model.pb").write_bytes(proto.SerializeToString())
    with pytest.raises(ModelLoadError, match="ReadFile.*--trust-model"):
        model_io.load_model(path)


def test_keras_safe_mode_is_a_second_line_for_h5(tmp_path, monkeypatch):
    """Even if the config scan missed a Lambda, Keras' safe mode refuses its bytecode."""
    keras = _tf.keras()
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: t * 2, name="double")(inputs)
    keras.Model(inputs, x).save(tmp_path / "m.h5")
    monkeypatch.setattr(model_io, "untrusted_parts", lambda config: [])
    with pytest.raises(ModelLoadError, match="cannot be loaded by Keras"):
        model_io.load_model(tmp_path / "m.h5")


# -- data files --------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling this creates the marker


def test_pickled_arrays_are_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    payload = np.array([_Payload(marker)] * 4, dtype=object)
    np.savez(tmp_path / "d.npz", x=payload, y=np.zeros(4, int))
    np.save(tmp_path / "c.npy", payload, allow_pickle=True)
    (tmp_path / "p.npz").write_bytes(pickle.dumps(payload))
    with pytest.raises(DataError, match="pickled"):
        data.load_labelled(tmp_path / "d.npz", "--data")
    with pytest.raises(DataError, match="pickled"):
        data.load_samples(tmp_path / "c.npy", "--calib")
    with pytest.raises(DataError, match="not a zip"):
        data.load_labelled(tmp_path / "p.npz", "--data")
    assert not marker.exists()
    pickle.loads((tmp_path / "p.npz").read_bytes())
    assert marker.exists(), "the canary is live: unpickling it runs code"


def test_every_np_load_in_the_package_refuses_pickles():
    calls = [(p, line) for p in PACKAGE.rglob("*.py")
             for line in p.read_text().splitlines() if "np.load(" in line]
    assert calls
    for path, line in calls:
        assert "allow_pickle=False" in line, (path, line)


# -- TOML ---------------------------------------------------------------------------------------
def test_toml_values_are_data_never_class_names(tmp_path):
    target = tmp_path / "t.toml"
    target.write_text('inherit = "host"\n[hardware]\nkind = "os.system"\n')
    with pytest.raises(TargetError, match="'os.system' is not one of"):
        load_target(str(target))
    with pytest.raises(RecipeError, match="builtins.eval"):
        resolve_recipe({"criterion": "builtins.eval"}, "t.toml", None, {})


def test_toml_loaders_have_no_import_or_eval_machinery():
    pattern = re.compile(r"\bimportlib\b|__import__|\beval\(|\bexec\(|\bpickle\b|locate\(")
    for module in ("targets.py", "recipe.py", "drivers/ci_report.py"):
        assert not pattern.search((PACKAGE / module).read_text()), module


def test_target_name_cannot_escape_the_output_folder(tmp_path):
    target = tmp_path / "t.toml"
    for name in ("../evil", "/abs", ".hidden"):
        target.write_text(f'inherit = "host"\nname = "{name}"\n')
        with pytest.raises(TargetError, match="not a usable folder name"):
            load_target(str(target))


# -- artifacts and flashing ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "a/../../b", "a\\b", "./x", "a//b",
                                  "$(id)", "x;rm -rf ~", "-rf", ""])
def test_artifact_names_must_be_plain_relative_paths(name):
    with pytest.raises(BadInputError, match="plain relative path"):
        safe_relative(name, "manifest.json")


def _artifacts(folder: Path, entries: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"artifacts": entries}))
    return folder


def test_flash_refuses_a_manifest_that_points_outside_before_connecting(tmp_path):
    (tmp_path / "evil").write_bytes(b"secret")
    art = _artifacts(tmp_path / "art", {"../evil": _sha(tmp_path / "evil")})
    with pytest.raises(BadInputError, match="'../evil' is not a plain relative path"):
        flash_linux(art, parse_ssh("ssh://pi@192.0.2.1"), dry_run=True)


def test_flash_refuses_a_symlink_out_of_the_artifacts_folder(tmp_path):
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"private")
    art = _artifacts(tmp_path / "art", {"model.tflite": _sha(secret)})
    (art / "model.tflite").symlink_to(secret)
    with pytest.raises(BadInputError, match="model.tflite is listed but missing"):
        read_manifest(art)


@pytest.mark.parametrize("remote_dir", ["/opt/x; rm -rf ~", "/opt/$(id)", "/opt/`id`",
                                        "/opt/a b", "/opt/../etc", "relative"])
def test_remote_dir_with_shell_syntax_is_refused(remote_dir):
    with pytest.raises(BadInputError, match="--remote-dir"):
        check_remote_dir(remote_dir)


def test_dry_run_commands_quote_every_remote_argument(tmp_path):
    model = tmp_path / "art" / "model+v2.tflite"
    model.parent.mkdir()
    model.write_bytes(b"tflite")
    art = _artifacts(model.parent, {"model+v2.tflite": _sha(model)})
    result = flash_linux(art, parse_ssh("ssh://pi@192.0.2.1"), dry_run=True,
                         remote_dir="/opt/edgeprune/m")
    ssh_lines = [c for c in result.commands if c.startswith("ssh ")]
    assert ssh_lines
    for line in ssh_lines:  # ssh -p PORT user@host 'ONE QUOTED COMMAND'
        argv = shlex.split(line)
        assert argv[:4] == ["ssh", "-p", "22", "pi@192.0.2.1"] and len(argv) == 5
        assert shlex.split(argv[4])  # the remote line itself parses as quoted words


# -- SSH: host keys and command quoting against a real sshd ----------------------------------------
@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def test_unknown_host_key_is_refused_and_never_saved(sshd, tmp_path):
    from edgeprune.runners.ssh import SshSession

    empty = tmp_path / "known_hosts"
    empty.write_text("")
    missing = tmp_path / "absent_known_hosts"
    for known_hosts in (empty, missing):
        with pytest.raises(BadInputError, match="SHA256:.*refused") as err:
            SshSession(parse_ssh(sshd.uri), known_hosts, sshd.identity).connect()
        assert err.value.exit_code == 2 and "ssh-keyscan" in err.value.fix
    assert empty.read_text() == "" and not missing.exists()  # nothing was added


def test_remote_arguments_reach_the_device_as_literal_words(sshd, tmp_path):
    from edgeprune.runners.ssh import SshSession

    marker = tmp_path / "pwned"
    hostile = [f"; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", "a b", "'\""]
    with SshSession(parse_ssh(sshd.uri), sshd.known_hosts, sshd.identity) as session:
        result = session.run(["printf", "%s\\n", *hostile])
    assert result.stdout.splitlines() == hostile
    assert not marker.exists()
