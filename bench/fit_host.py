"""Fit the Cortex-A latency model (edgeprune/estimate/cpu.py) to THIS machine.

Times single-op LiteRT models (one thread) for every op class and dtype the model prices —
synthetic shapes only, none taken from the architectures bench/estimator_accuracy.py
evaluates — plus chains of tiny ops for the per-op and per-invoke overheads, then fits
E[class, dtype], the memory bandwidth and the overheads by least squares on log latency.
Writes bench/host_microbench.json (the timings) and bench/host-estimate.toml (a target
profile: kind cortex-a, this machine's clock, the fitted [estimator]).

    nice .venv/bin/python bench/fit_host.py            # time what is new, fit (≈ 10 min)
    nice .venv/bin/python bench/fit_host.py --refit    # fit again from the saved timings
    nice .venv/bin/python bench/fit_host.py --remeasure   # time everything again
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE as CACHE_DIR
from _common import cached, convert, keras, time_ms

from edgeprune import _tf
from edgeprune.estimate.cpu import CpuParams, op_seconds, with_graph
from edgeprune.estimate.opclass import graph_work
from edgeprune.targets import OP_CLASSES, OP_REFINEMENTS
from edgeprune.tflite.graph import parse_tflite

HERE = Path(__file__).resolve().parent
TIMINGS = HERE / "host_microbench.json"
PROFILE = HERE / "host-estimate.toml"
DTYPES = ("float32", "int8")


def _model(spec: tuple):
    """A tf_keras model for one spec: (kind, *shape parameters)."""
    k = keras()
    tf = _tf.tf()
    L = k.layers
    kind, *a = spec
    if kind == "conv":  # kernel, stride, size, cin, cout
        kern, stride, hw, cin, cout = a
        x = k.Input((hw, hw, cin), batch_size=1)
        return k.Model(x, L.Conv2D(cout, kern, stride, padding="same", activation="relu")(x))
    if kind == "dw":  # kernel, stride, size, channels
        kern, stride, hw, c = a
        x = k.Input((hw, hw, c), batch_size=1)
        return k.Model(x, L.DepthwiseConv2D(kern, stride, padding="same",
                                            activation="relu")(x))
    if kind == "fc":
        n_in, n_out = a
        x = k.Input((n_in,), batch_size=1)
        return k.Model(x, L.Dense(n_out)(x))
    if kind in ("add", "mul", "mul_bcast", "concat"):
        hw, c = a
        x = k.Input((hw, hw, c), batch_size=1)
        if kind == "mul_bcast":  # squeeze-excite style: per-channel scale
            s = k.Input((1, 1, c), batch_size=1)
            return k.Model([x, s], L.Multiply()([x, s]))
        y = k.Input((hw, hw, c), batch_size=1)
        layer = {"add": L.Add(), "mul": L.Multiply(), "concat": L.Concatenate()}[kind]
        return k.Model([x, y], layer([x, y]))
    if kind == "fc_chain":
        n, width = a
        x = inp = k.Input((width,), batch_size=1)
        for _ in range(n):
            x = L.Dense(width)(x)
        return k.Model(inp, x)
    if kind == "add_chain":  # n tiny ADDs: overheads only
        n, hw, c = a
        x = inp = k.Input((hw, hw, c), batch_size=1)
        for _ in range(n):
            x = L.Add()([x, inp])
        return k.Model(inp, x)
    if kind in ("sigmoid", "hswish", "pad", "maxpool", "avgpool", "gap"):
        hw, c = a
        x = k.Input((hw, hw, c), batch_size=1)
        layer = {
            "sigmoid": L.Activation("sigmoid"),
            "hswish": L.Lambda(lambda t: t * tf.nn.relu6(t + 3.0) / 6.0),
            "pad": L.ZeroPadding2D(1),
            "maxpool": L.MaxPooling2D(3, 2, padding="same"),
            "avgpool": L.AveragePooling2D(2),
            "gap": L.GlobalAveragePooling2D(),
        }[kind]
        return k.Model(x, layer(x))
    if kind == "softmax":
        x = k.Input((a[0],), batch_size=1)
        return k.Model(x, L.Softmax()(x))
    raise ValueError(kind)


# (spec, dtypes, I/O): int8 models use int8 I/O so they hold the op alone; the "convert"
# entries keep float I/O to time QUANTIZE/DEQUANTIZE around a known op.
SPECS: list[tuple] = [
    ("conv", 1, 1, 56, 64, 64), ("conv", 1, 1, 28, 128, 128), ("conv", 1, 1, 14, 256, 256),
    ("conv", 1, 1, 7, 512, 512), ("conv", 1, 1, 28, 48, 160), ("conv", 1, 1, 14, 320, 64),
    ("conv", 3, 1, 56, 32, 32), ("conv", 3, 1, 28, 64, 64), ("conv", 3, 1, 14, 128, 128),
    ("conv", 3, 2, 128, 3, 24), ("conv", 3, 2, 64, 3, 16), ("conv", 3, 1, 10, 16, 24),
    ("conv", 5, 1, 20, 32, 32), ("conv", 7, 2, 96, 3, 32), ("conv", 1, 1, 40, 8, 32),
    ("conv", 1, 1, 20, 16, 96), ("conv", 1, 1, 1, 96, 24), ("conv", 1, 1, 1, 24, 96),
    ("dw", 3, 1, 96, 32), ("dw", 3, 2, 96, 64), ("dw", 3, 1, 48, 128), ("dw", 3, 1, 24, 256),
    ("dw", 3, 1, 12, 512), ("dw", 5, 1, 24, 120), ("dw", 5, 2, 48, 72), ("dw", 3, 1, 6, 960),
    ("dw", 3, 1, 16, 8),
    ("fc", 1024, 1000), ("fc", 512, 128), ("fc", 256, 10), ("fc", 2048, 600), ("fc", 64, 16),
    ("add", 56, 64), ("add", 28, 128), ("add", 12, 320), ("add", 96, 24),
    ("mul_bcast", 56, 72), ("mul_bcast", 14, 480), ("mul", 28, 96),
    ("sigmoid", 56, 64), ("sigmoid", 14, 240), ("hswish", 56, 64), ("hswish", 14, 240),
    ("softmax", 1000), ("softmax", 100),
    ("maxpool", 96, 64), ("maxpool", 24, 128), ("avgpool", 28, 128), ("gap", 7, 1024),
    ("gap", 14, 256),
    ("concat", 28, 64), ("concat", 56, 32), ("pad", 56, 64), ("pad", 14, 256),
    ("add_chain", 1, 2, 8), ("add_chain", 8, 2, 8), ("add_chain", 32, 2, 8),
    # chains of distinct 1024×1024 FC layers: total weights from 1 to 64 MB, so the last ones
    # no longer stay in the cache between inferences and stream from DRAM
    ("fc_chain", 2, 1024), ("fc_chain", 4, 1024), ("fc_chain", 8, 1024), ("fc_chain", 16, 1024),
]  # fmt: skip
CONVERT_SPECS = [("conv", 1, 1, 56, 64, 64), ("add", 56, 64), ("gap", 14, 256)]


def _name(spec: tuple, kind: str) -> str:
    return "micro_" + "_".join(map(str, spec)) + f"_{kind}"


def measure(repeats: int, saved: dict[str, dict]) -> list[dict]:
    """Time every micro-benchmark not already in ``saved`` (by name)."""
    rows = []
    jobs = [(s, "float") for s in SPECS] + [(s, "int8io") for s in SPECS]
    jobs += [(s, "int8") for s in CONVERT_SPECS]
    for i, (spec, kind) in enumerate(jobs):
        name = _name(spec, kind)
        if name in saved:
            rows.append(saved[name])
            continue
        blob = cached(name, lambda s=spec, k=kind: convert(_model(s), k))
        ms = time_ms(blob, repeats=repeats)
        g = parse_tflite(blob, name=name)
        rows.append({"name": name, "spec": list(spec), "kind": kind, "ms": ms,
                     "ops": [op.op_type for op in g.ops]})
        print(f"[{i + 1}/{len(jobs)}] {name}: {ms:.4f} ms {rows[-1]['ops']}", flush=True)
    return rows


# --- the fit ---------------------------------------------------------------------------------

KEYS = [f"{c}_{d}" for c in (*OP_CLASSES, *OP_REFINEMENTS) for d in DTYPES]
EXTRA = ["mem_gbps", "dram_gbps", "op_overhead_us", "gemm_overhead_us", "invoke_overhead_us",
         "out_int8", "out_float32"]
PROXIES = {"activation": "sigmoid"}
# The channel tile is a kernel-layout integer, not a continuous quantity: a small grid.
TILES = {"int8": (1, 2, 4, 8, 16), "float32": (1, 2, 4, 8)}
CACHES_KB = (2048, 4096, 8192, 16384, 32768)  # the last-level cache a model's weights share


def params(theta: dict[str, float], clock_hz: float) -> CpuParams:
    return CpuParams(
        efficiency={k: v for k, v in theta.items() if k in KEYS},
        output_cost={"int8": theta["out_int8"], "float32": theta["out_float32"]},
        channel_tile={"int8": theta["tile_int8"], "float32": theta["tile_float32"]},
        clock_hz=clock_hz, mem_bytes_per_s=theta["mem_gbps"] * 1e9,
        op_overhead_s=theta["op_overhead_us"] * 1e-6,
        invoke_overhead_s=theta["invoke_overhead_us"] * 1e-6, threads=1, speedup=1.0,
        dram_bytes_per_s=theta["dram_gbps"] * 1e9, cache_bytes=theta["cache_kb"] * 1024,
        gemm_overhead_s=theta["gemm_overhead_us"] * 1e-6,
    )


def predict_ms(model: tuple, theta: dict[str, float], clock_hz: float) -> float:
    """edgeprune/estimate/cpu.py's formula itself, at one thread."""
    graph, works = model
    p = with_graph(params(theta, clock_hz), graph)
    return (p.invoke_overhead_s + sum(op_seconds(w, p)[0] for w in works)) * 1e3


def fit(rows: list[dict], clock_hz: float) -> tuple[dict[str, float], float]:
    from scipy.optimize import least_squares

    data = []
    for r in rows:
        spec, kind = tuple(r["spec"]), r["kind"]
        blob = cached(r["name"], lambda s=spec, k=kind: convert(_model(s), k))
        graph = parse_tflite(blob, name=r["name"])
        data.append(((graph, graph_work(graph)), r["ms"]))
    used = sorted({f"{w.op_class}_{w.dtype}" for (_, works), _ in data for w in works}
                  & set(KEYS))
    names = used + EXTRA
    # Start each class at its own models' median rate: the fit then only refines.
    start: dict[str, float] = {"mem_gbps": 20.0, "dram_gbps": 10.0, "op_overhead_us": 0.05,
                               "gemm_overhead_us": 0.5,
                               "invoke_overhead_us": 1.0, "out_int8": 10.0, "out_float32": 2.0}
    for key in used:
        rates = [sum(w.macs for w in works) / (ms * 1e-3 * clock_hz) for (_, works), ms in data
                 if {f"{w.op_class}_{w.dtype}" for w in works} == {key}]
        start[key] = float(np.median(rates)) if rates else 4.0
    # Physical bounds keep the optimiser away from trading one class against the bandwidth:
    # no x86 core sustains more than 64 int8 / 32 fp32 MACs per cycle.
    bounds = {"mem_gbps": (1.0, 200.0), "dram_gbps": (0.5, 100.0),
              "op_overhead_us": (1e-3, 50.0), "gemm_overhead_us": (1e-3, 50.0),
              "invoke_overhead_us": (1e-2, 100.0), "out_int8": (0.01, 500.0),
              "out_float32": (0.01, 500.0)}
    lo = np.log([bounds.get(n, (1e-3, 64.0))[0] for n in names])
    hi = np.log([bounds.get(n, (1e-3, 64.0))[1] for n in names])

    x0 = np.clip(np.log([start[n] for n in names]), lo + 1e-6, hi - 1e-6)
    def solve(fixed: dict[str, float]) -> tuple[float, dict[str, float]]:
        def residuals(logp: np.ndarray) -> np.ndarray:
            theta = dict(zip(names, np.exp(logp), strict=True)) | fixed
            return np.array([math.log(predict_ms(m, theta, clock_hz) / ms) for m, ms in data])

        sol = least_squares(residuals, x0, bounds=(lo, hi), method="trf")
        return sol.cost, dict(zip(names, np.exp(sol.x), strict=True)) | fixed

    # Two small grids for the discrete parameters: the channel tiles (cache at 8 MiB), then
    # the cache size with the best tiles.
    best: tuple[float, dict[str, float]] | None = None
    for t8 in TILES["int8"]:
        for t32 in TILES["float32"]:
            fit = solve({"tile_int8": float(t8), "tile_float32": float(t32), "cache_kb": 8192.0})
            best = fit if best is None or fit[0] < best[0] else best
    if best is None:
        raise RuntimeError("no fit")
    tiles = {"tile_int8": best[1]["tile_int8"], "tile_float32": best[1]["tile_float32"]}
    for cache in CACHES_KB:
        fit = solve(tiles | {"cache_kb": float(cache)})
        best = fit if fit[0] < best[0] else best
    theta = best[1]
    # A core class none of whose ops was timed alone takes the figure of its closest timed
    # refinement: ELU/GELU/EXP… evaluate exp() like LOGISTIC does.
    for core, proxy in PROXIES.items():
        for dtype in DTYPES:
            theta.setdefault(f"{core}_{dtype}", theta[f"{proxy}_{dtype}"])
    errors = [abs(predict_ms(m, theta, clock_hz) / ms - 1) for m, ms in data]
    return theta, float(np.mean(errors))


def clock_mhz() -> float:
    """Nominal clock from /proc/cpuinfo ('cpu MHz'), the figure E is relative to."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return round(float(line.split(":")[1]))
    return 1000.0


def runtime_rss_kb() -> int:
    """RSS of a Python process running LiteRT on a trivial model (one 8-element ADD): the
    interpreter, XNNPACK and the Python runtime, without any real model's bytes."""
    import subprocess

    blob = CACHE_DIR / f"{_name(('add_chain', 1, 2, 8), 'float')}.tflite"
    code = ("import sys, numpy as np\n"
            "from ai_edge_litert.interpreter import Interpreter\n"
            "it = Interpreter(model_path=sys.argv[1], num_threads=1)\n"
            "it.allocate_tensors(); it.invoke()\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code, str(blob)], capture_output=True,
                         text=True, check=True).stdout
    return int(out.strip().splitlines()[-1])


def write_profile(theta: dict[str, float], mhz: float, mape: float, n: int, rss: int) -> None:
    table = "\n".join(f"{k} = {theta[k]:.4g}" for k in KEYS if k in theta)
    PROFILE.write_text(f'''\
# THIS machine as a Cortex-A-style target: the Cortex-A latency model with its
# parameters fitted here, so the estimator's error can be measured honestly against
# real LiteRT timings (bench/estimator_accuracy.py). Not a shipped target; use it with
#     edgeprune check MODEL.tflite --target bench/host-estimate.toml
# Produced by:  nice .venv/bin/python bench/fit_host.py
# Fit: {n} single-op / op-chain LiteRT models (synthetic shapes, one thread), least
# squares on log latency; mean |error| on those models {mape * 100:.1f} %.
name = "host-estimate"
description = "This machine, estimated (Cortex-A model fitted by bench/fit_host.py)"

[hardware]
kind = "cortex-a"
cpu = "x86-64"
cores = 2
clock_mhz = {mhz:g}  # /proc/cpuinfo 'cpu MHz'; E below is per cycle of this clock
simd_bits = 256
channel_multiple = 8

[runtime]
engine = "litert-xnnpack"
threads = 1

[budgets]
latency_ms = 2.0
ram_kb = 131072
flash_kb = 512
accuracy_drop = 1.5

[estimator]
output_cost_macs = {{ int8 = {theta["out_int8"]:.4g}, float32 = {theta["out_float32"]:.4g} }}
conv_channel_tile = {{ int8 = {theta["tile_int8"]:g}, float32 = {theta["tile_float32"]:g} }}
mem_gbps = {theta["mem_gbps"]:.4g}  # fitted
dram_gbps = {theta["dram_gbps"]:.4g}  # fitted
cache_kb = {theta["cache_kb"]:g}  # fitted on a grid (L3 is 32 MiB, shared with other VMs)
op_overhead_us = {theta["op_overhead_us"]:.4g}  # fitted
gemm_overhead_us = {theta["gemm_overhead_us"]:.4g}  # fitted
invoke_overhead_us = {theta["invoke_overhead_us"]:.4g}  # fitted
thread_speedup = [1.0]  # one thread only: the machine is shared, multi-thread timings are noise
runtime_rss_kb = {rss}  # measured: peak RSS of Python + LiteRT running a one-ADD model

[estimator.macs_per_cycle.litert-xnnpack]  # fitted MACs per cycle
{table}
''')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refit", action="store_true", help="fit from bench/host_microbench.json")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--remeasure", action="store_true",
                    help="time every micro-benchmark again (default: only new ones)")
    args = ap.parse_args()
    saved = json.loads(TIMINGS.read_text()) if TIMINGS.is_file() else {"rows": []}
    if args.refit:
        rows, mhz = saved["rows"], saved["clock_mhz"]
    else:
        mhz = clock_mhz()
        keep = {} if args.remeasure else {r["name"]: r for r in saved["rows"]}
        rows = measure(args.repeats, keep)
        TIMINGS.write_text(json.dumps({"clock_mhz": mhz, "rows": rows}, indent=1) + "\n")
    theta, mape = fit(rows, mhz * 1e6)
    for k, v in theta.items():
        print(f"{k:>24} {v:.4g}")
    print(f"mean |error| on the micro-benchmarks: {mape * 100:.1f} %")
    write_profile(theta, mhz, mape, len(rows), runtime_rss_kb())
    print(f"wrote {PROFILE}")


if __name__ == "__main__":
    main()
