"""TensorFlow-free .tflite parsing: ops, shapes, dtypes, MACs, weights, lifetimes, planner."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb

from edgeprune.errors import BadInputError
from edgeprune.tflite.graph import OpInfo, TensorInfo, TfliteGraph, parse_tflite
from edgeprune.tflite.planner import plan_arena, plan_buffers

CNN_OPS = [
    "ADD", "AVERAGE_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
    "MAX_POOL_2D", "MEAN", "SOFTMAX",
]  # fmt: skip
# Hand-computed MACs of every_op_cnn() (input 1x16x16x3), in graph order.
CNN_MACS = {
    "CONV_2D": [16 * 16 * 8 * 3 * 3 * 3, 3 * 3 * 16 * 3 * 3 * 8],  # 55,296 and 10,368
    "DEPTHWISE_CONV_2D": [16 * 16 * 8 * 3 * 3],  # 18,432
    "ADD": [16 * 16 * 8],  # output elements
    "MAX_POOL_2D": [8 * 8 * 8 * 2 * 2],  # output elements x window
    "AVERAGE_POOL_2D": [1 * 1 * 16 * 2 * 2],
    "MEAN": [1 * 1 * 16],  # input elements
    "FULLY_CONNECTED": [1 * 10 * 16],  # batch x out x in
    "SOFTMAX": [10],  # generic rule: output elements
}
CNN_TOTAL_MACS = 88_442


def by_type(graph: TfliteGraph) -> dict[str, list[OpInfo]]:
    out: dict[str, list[OpInfo]] = {}
    for op in graph.ops:
        out.setdefault(op.op_type, []).append(op)
    return out


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_ops_macs_and_options(cnn_tflite, kind):
    g = parse_tflite(cnn_tflite[kind])
    extra = ["DEQUANTIZE", "QUANTIZE"] if kind == "int8" else []
    assert g.op_types() == sorted(CNN_OPS + extra)
    ops = by_type(g)
    for op_type, macs in CNN_MACS.items():
        assert [op.macs for op in ops[op_type]] == macs, op_type
    assert ops["SOFTMAX"][0].generic_macs and not ops["CONV_2D"][0].generic_macs
    assert g.total_macs == CNN_TOTAL_MACS + (16 * 16 * 3 + 10 if kind == "int8" else 0)

    conv1, conv2 = ops["CONV_2D"]
    assert conv1.options["padding"] == "SAME" and conv1.options["activation"] == "RELU"
    assert (conv2.options["stride_h"], conv2.options["stride_w"]) == (2, 2)
    assert conv2.options["padding"] == "VALID"
    assert ops["MAX_POOL_2D"][0].options["filter_h"] == 2
    assert ops["DEPTHWISE_CONV_2D"][0].options["depth_multiplier"] == 1


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_shapes_dtypes_and_bytes(cnn_tflite, kind):
    g = parse_tflite(cnn_tflite[kind])
    act = 4 if kind == "float" else 1  # bytes per activation / weight element
    (inp,), (out,) = g.inputs, g.outputs
    assert g.tensors[inp].shape == (1, 16, 16, 3) and g.tensors[inp].dtype == "float32"
    assert g.tensors[out].shape == (1, 10) and g.tensors[out].dtype == "float32"
    assert g.model_bytes == Path(cnn_tflite[kind]).stat().st_size

    ops = by_type(g)
    conv1 = ops["CONV_2D"][0]
    w, bias = (g.tensors[i] for i in conv1.inputs[1:])
    assert w.shape == (8, 3, 3, 3) and w.is_constant and bias.shape == (8,)
    assert w.dtype == ("float32" if kind == "float" else "int8")
    assert bias.dtype == ("float32" if kind == "float" else "int32")
    assert conv1.weight_bytes == 8 * 3 * 3 * 3 * act + 8 * 4
    assert ops["DEPTHWISE_CONV_2D"][0].weight_bytes == 3 * 3 * 8 * act + 8 * 4
    add = ops["ADD"][0]
    assert add.weight_bytes == 0 and add.activation_bytes == 3 * 16 * 16 * 8 * act
    if kind == "int8":
        assert len(w.scale) == 8 and w.zero_point == (0,) * 8  # per-channel weights
        q = g.tensors[ops["QUANTIZE"][0].outputs[0]]
        assert q.dtype == "int8" and len(q.scale) == 1 and -128 <= q.zero_point[0] <= 127


def constant_buffer_bytes(path: Path) -> int:
    """Independent count with the flatbuffers object API: unique non-empty buffers in use."""
    model = fb.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    used = {t.buffer for t in model.subgraphs[0].tensors}
    return sum(len(model.buffers[b].data) for b in used if model.buffers[b].data is not None)


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_weight_bytes_match_constant_buffers(cnn_tflite, kind):
    g = parse_tflite(cnn_tflite[kind])
    assert g.weight_bytes == constant_buffer_bytes(cnn_tflite[kind])
    assert g.weight_bytes > 0
    for op in g.ops:  # per-op weight bytes are exactly the constant inputs
        consts = {i for i in op.inputs if i >= 0 and g.tensors[i].is_constant}
        assert op.weight_bytes == sum(g.tensors[i].nbytes for i in consts)


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_tensors_agree_with_litert(cnn_tflite, kind):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_path=str(cnn_tflite[kind]),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    g = parse_tflite(cnn_tflite[kind])
    details = {d["index"]: d for d in interp.get_tensor_details()}
    assert len(details) >= len(g.tensors)
    for t in g.tensors:
        d = details[t.index]
        assert t.name == d["name"]
        assert t.shape == tuple(d["shape"])
        assert t.dtype == np.dtype(d["dtype"]).name
        assert t.nbytes == int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize
        assert t.scale == pytest.approx(tuple(d["quantization_parameters"]["scales"]))


def test_lifetimes_follow_producers_and_consumers(cnn_tflite):
    g = parse_tflite(cnn_tflite["int8"])
    life = g.lifetimes()
    planned = {t.index for t in g.tensors if not t.is_constant and not t.is_variable}
    assert set(life) == planned
    assert life[g.inputs[0]][0] == 0
    assert life[g.outputs[0]][1] == len(g.ops) - 1
    for op in g.ops:
        for t in op.outputs:
            assert life[t][0] == op.index
        for t in op.inputs:
            if t in life:
                assert life[t][0] <= op.index <= life[t][1]
    # The residual: conv1's output stays alive until the ADD that consumes it.
    conv1, add = by_type(g)["CONV_2D"][0], by_type(g)["ADD"][0]
    assert life[conv1.outputs[0]] == (conv1.index, add.index)


def test_greedy_planner_hand_case():
    # (size, first, last): sizes align to 16 -> A 112, B 64, C 80, D 32, E 16.
    buffers = [(100, 0, 1), (50, 1, 2), (80, 2, 3), (30, 0, 3), (16, 3, 3)]
    offsets, peak = plan_buffers(buffers)
    # Largest first: A at 0; C (not alive with A) also at 0; B above both; D above B;
    # E (step 3 only) fits the gap between C's end (80) and D (176).
    assert offsets == [0, 112, 0, 176, 80]
    assert peak == 208
    assert plan_buffers([]) == ([], 0)


def tensor(i: int, nbytes: int, const: bool = False) -> TensorInfo:
    return TensorInfo(i, f"t{i}", (nbytes,), "int8", nbytes, const)


def op(i: int, op_type: str, ins: tuple[int, ...], outs: tuple[int, ...]) -> OpInfo:
    return OpInfo(i, op_type, ins, outs, macs=0, weight_bytes=0, activation_bytes=0)


def test_plan_arena_hand_graph():
    # in(1000) -conv-> a(2000) -conv-> b(500); add(a, b) -> out(1000); w is a constant.
    g = TfliteGraph(
        name="hand",
        ops=(op(0, "CONV_2D", (0, 4), (1,)), op(1, "CONV_2D", (1, 4), (2,)),
             op(2, "ADD", (1, 2), (3,))),
        tensors=(tensor(0, 1000), tensor(1, 2000), tensor(2, 500), tensor(3, 1000),
                 tensor(4, 64, const=True)),
        inputs=(0,), outputs=(3,), model_bytes=0,
    )  # fmt: skip
    assert g.lifetimes() == {0: (0, 0), 1: (0, 2), 2: (1, 2), 3: (2, 2)}
    plan = plan_arena(g)
    assert plan.sizes == {0: 1008, 1: 2000, 2: 512, 3: 1008}
    # a at 0; in above a; out reuses in's slot (in is dead by then); b above out.
    assert plan.offsets == {1: 0, 0: 2000, 3: 2000, 2: 3008}
    assert plan.peak_bytes == 3520 and plan.total_bytes == 4528
    assert plan.arena_bytes > plan.peak_bytes  # + TFLM's persistent tail estimate


def test_planner_beats_no_reuse(cnn_tflite):
    g = parse_tflite(cnn_tflite["int8"])
    plan = plan_arena(g)
    assert 0 < plan.peak_bytes < plan.total_bytes
    # Buffers alive at the same time never overlap in memory.
    life = g.lifetimes()
    items = list(plan.offsets)
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            if life[a][0] <= life[b][1] and life[b][0] <= life[a][1]:
                a0, b0 = plan.offsets[a], plan.offsets[b]
                assert a0 + plan.sizes[a] <= b0 or b0 + plan.sizes[b] <= a0


def test_bytes_and_path_sources_agree(cnn_tflite):
    path = cnn_tflite["float"]
    from_path, from_bytes = parse_tflite(path), parse_tflite(path.read_bytes(), name="m")
    assert from_bytes.name == "m" and from_path.name == str(path)
    assert from_path.ops == from_bytes.ops and from_path.tensors == from_bytes.tensors


def test_parser_does_not_import_tensorflow(cnn_tflite):
    code = (
        "import sys\nfrom edgeprune.tflite.graph import parse_tflite\n"
        "from edgeprune.tflite.planner import plan_arena\n"
        f"plan_arena(parse_tflite({str(cnn_tflite['int8'])!r}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'tf_keras', 'keras')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- corrupt input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"TFL3", b"\x00" * 8, b"\x10\x00\x00\x00TFL3", b'{"not": "a model"}' * 4,
     b"\x1c\x00\x00\x00TFL2" + b"\x00" * 64, bytes(range(256)) * 4],
    ids=["empty", "4-bytes", "zeros", "header-only", "json", "wrong-identifier", "garbage"],
)  # fmt: skip
def test_garbage_is_bad_input(data):
    with pytest.raises(BadInputError, match=r"not a valid \.tflite flatbuffer") as err:
        parse_tflite(data, name="broken.tflite")
    assert err.value.what == "broken.tflite"
    assert "Re-export" in str(err.value) and err.value.exit_code == 2


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="nope.tflite"):
        parse_tflite(tmp_path / "nope.tflite")


def test_empty_file_names_the_file(tmp_path):
    path = tmp_path / "empty.tflite"
    path.write_bytes(b"")
    with pytest.raises(BadInputError, match="empty.tflite.*file is empty"):
        parse_tflite(path)


def test_every_truncation_is_bad_input(cnn_tflite):
    data = cnn_tflite["int8"].read_bytes()
    cuts = [1, 7, 8, 64, len(data) // 2, len(data) - 1]
    cuts += random.Random(0).sample(range(len(data)), 200)
    for n in cuts:
        with pytest.raises(BadInputError):
            parse_tflite(data[:n], name=f"cut{n}.tflite")


def test_random_corruption_never_crashes(cnn_tflite):
    data = cnn_tflite["int8"].read_bytes()
    rng = random.Random(1)
    for _ in range(400):
        buf = bytearray(data)
        for _ in range(rng.choice([1, 4, 32])):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        try:
            g = parse_tflite(bytes(buf))
        except BadInputError:
            continue
        plan_arena(g)  # whatever parses must also plan without crashing
        assert g.total_macs >= 0
