"""Run a .tflite with LiteRT on a device (or in emulation) and print the figures as JSON.

Copied to the device and run there with the device's python3, so it is self-contained: the
standard library, numpy and ai_edge_litert (or the older tflite_runtime) only, no edgeprune
imports, and no syntax newer than Python 3.7.

    python3 remote_bench.py MODEL [--threads T] [--warmup W] [--runs R]
                            [--input X.npy] [--outputs Y.npy] [--path DIR]
    python3 remote_bench.py --probe     what the device is (no model, no LiteRT needed)

The input sample(s) arrive already in the model's input dtype (the host quantizes), so the
outputs written to ``--outputs`` are the raw output tensors, comparable bit for bit.
The last line on stdout is one JSON object; exit status 3 with ``{"ok": false, "missing": ...}``
when a module is missing, 4 with ``{"ok": false, "delegate_missing": LIB, ...}`` when
``--delegate LIB`` (e.g. the Edge TPU's libedgetpu.so.1) cannot be loaded.
"""

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import time

EXIT_MISSING = 3
EXIT_NO_DELEGATE = 4
TPU_OP = "edgetpu-custom-op"  # what edgetpu_compiler puts in place of each segment it maps
# With --mark, lseek(-1, MARK, 0) (fails harmlessly with EBADF) brackets the timed invokes, so an
# instruction-counting emulator can count exactly them.
MARK_START, MARK_END = 0x65700001, 0x65700002


def _mark(code):
    with contextlib.suppress(OSError):
        os.lseek(-1, code, 0)


class _Missing(Exception):
    def __init__(self, module, package):
        Exception.__init__(self, module)
        self.report = {"ok": False, "missing": module, "package": package,
                       "install": "pip install " + package,
                       "python": sys.executable, "version": platform.python_version()}


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter
        return interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter
        return interpreter, "tflite_runtime"
    except ImportError:
        raise _Missing("ai_edge_litert", "ai-edge-litert") from None


def _delegate_version(library):
    """libedgetpu's edgetpu_version(); None for a library without it."""
    import ctypes
    try:
        fn = ctypes.CDLL(library).edgetpu_version
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_char_p
    value = fn()
    return value.decode("utf-8", "replace") if value else None


def _op_counts(interp):
    names = [op.get("op_name", "") for op in interp._get_ops_details()]
    return {"ops": len(names), "tpu_segments": names.count(TPU_OP)}


def _peak_rss_bytes():
    # Linux reports ru_maxrss in KiB (macOS in bytes; devices here are Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device():
    """uname -m, core count and what /proc/cpuinfo names: each core's (implementer, part) on
    Arm, "model name" on x86, the board "Model" line where there is one."""
    info = {"machine": platform.machine(), "cores": os.cpu_count() or 0, "cpu_parts": [],
            "model_name": "", "board": ""}
    implementer = None
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "CPU implementer":
            implementer = value
        elif key == "CPU part" and implementer is not None:
            info["cpu_parts"].append([implementer, value])
        elif key == "model name" and not info["model_name"]:
            info["model_name"] = value
        elif key == "Model":
            info["board"] = value
    return info


def _percentile(sorted_ms, q):
    if not sorted_ms:
        return None
    k = (len(sorted_ms) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(sorted_ms) - 1)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (k - lo)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?")
    p.add_argument("--probe", action="store_true", help="only say what the device is")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--input", help=".npy: one sample, or (N, ...) samples, in the input dtype")
    p.add_argument("--outputs", help="write the raw output tensor of every --input sample here")
    p.add_argument("--path", action="append", default=[], help="prepend to sys.path")
    p.add_argument("--mark", action="store_true", help="bracket the timed invokes for counting")
    p.add_argument("--delegate", help="load this delegate library (e.g. libedgetpu.so.1)")
    args = p.parse_args(argv)
    for extra in reversed(args.path):
        sys.path.insert(0, extra)
    if args.probe:
        print(json.dumps({"ok": True, "python": platform.python_version(),
                          "device": device()}))
        return 0
    if not args.model:
        p.error("MODEL is required without --probe")

    try:
        try:
            import numpy as np
        except ImportError:
            raise _Missing("numpy", "numpy") from None
        module, runtime = _interpreter_module()
    except _Missing as exc:
        print(json.dumps(exc.report))
        return EXIT_MISSING
    rss_before = _peak_rss_bytes()

    start = time.perf_counter()
    delegates, delegate = [], None
    if args.delegate:
        try:
            delegates.append(module.load_delegate(args.delegate))
        except (OSError, ValueError) as exc:
            print(json.dumps({"ok": False, "delegate_missing": args.delegate,
                              "error": str(exc).strip(), "device": device()}))
            return EXIT_NO_DELEGATE
        delegate = {"library": args.delegate, "version": _delegate_version(args.delegate)}
    interp = module.Interpreter(model_path=args.model, num_threads=args.threads,
                                experimental_delegates=delegates or None)
    interp.allocate_tensors()
    load_ms = (time.perf_counter() - start) * 1e3
    if delegate is not None:
        delegate.update(_op_counts(interp))
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    shape = tuple(inp["shape"])
    if args.input:
        samples = np.load(args.input, allow_pickle=False)
        if samples.shape == shape[1:]:
            samples = samples[None]
    else:
        samples = np.zeros((1, *shape[1:]), dtype=inp["dtype"])
    if samples.dtype != inp["dtype"] or tuple(samples.shape[1:]) != shape[1:]:
        problem = f"input {samples.dtype} {samples.shape} does not match {inp['dtype']} {shape}"
        print(json.dumps({"ok": False, "error": problem}))
        return 2

    interp.set_tensor(inp["index"], samples[:1])
    for _ in range(args.warmup):
        interp.invoke()
    times = []
    if args.mark:
        _mark(MARK_START)
    for _ in range(args.runs):
        t0 = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    if args.mark:
        _mark(MARK_END)
    times.sort()

    compared = 0
    if args.outputs:
        results = []
        for sample in samples:
            interp.set_tensor(inp["index"], sample[None])
            interp.invoke()
            results.append(interp.get_tensor(out["index"])[0].copy())
        np.save(args.outputs, np.stack(results))
        compared = len(results)

    print(json.dumps({
        "ok": True,
        "runtime": runtime,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "device": device(),
        "delegate": delegate,
        "threads": args.threads,
        "warmup": args.warmup,
        "runs": args.runs,
        "load_ms": load_ms,
        "p50_ms": _percentile(times, 50),
        "p90_ms": _percentile(times, 90),
        "mean_ms": sum(times) / len(times) if times else None,
        "rss_before_load_bytes": rss_before,
        "peak_rss_bytes": _peak_rss_bytes(),
        "outputs": compared,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
