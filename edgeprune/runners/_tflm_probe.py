"""Child process for ``edgeprune.runners.tflm``: one TFLite-Micro interpreter, then exit.

Run as a script (``python _tflm_probe.py …``), never imported by the library: a too-small
arena can segfault inside TFLM, which must only kill this process. It imports numpy and
tflite_micro only (no TensorFlow, no edgeprune) so each probe starts in about 0.4 s.

    probe MODEL ARENA [INPUT.npy] [--allocations]   allocate + invoke once
    run   MODEL ARENA INPUTS.npy OUTPUTS.npy [OUT_INDEX]   invoke each sample of INPUTS

INPUT/INPUTS already have the model's input dtype; INPUTS is (N, *input_shape).
Exit codes: 0 ok, 10 allocation (AllocateTensors) failed, 11 invoke failed, 12 bad input.
TFLM's own messages (and ``print_allocations``) go to stderr from C.
"""

from __future__ import annotations

import sys

EXIT_ALLOC, EXIT_INVOKE, EXIT_INPUT = 10, 11, 12


def _fail(code: int, stage: str, err: BaseException) -> int:
    print(f"edgeprune-probe: {stage} failed: {type(err).__name__}: {err}", file=sys.stderr)
    return code


def main(argv: list[str]) -> int:
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime

    mode, model_path, arena = argv[0], argv[1], int(argv[2])
    with open(model_path, "rb") as f:
        model = f.read()
    try:
        interp = runtime.Interpreter.from_bytes(model, arena_size=arena)
    except Exception as e:  # RuntimeError("TFLM failed to allocate tensors") and kin
        return _fail(EXIT_ALLOC, "allocation", e)

    if mode == "probe":
        n_inputs = runtime.schema_fb.Model.GetRootAs(model, 0).Subgraphs(0).InputsLength()
        for i in range(n_inputs):
            details = interp.get_input_details(i)
            if i == 0 and len(argv) > 3 and argv[3].endswith(".npy"):
                x = np.load(argv[3], allow_pickle=False)
            else:
                x = np.zeros(details["shape"], details["dtype"])
            try:
                interp.set_input(x, i)
            except Exception as e:
                return _fail(EXIT_INPUT, f"set_input({i})", e)
        try:
            interp.invoke()
        except Exception as e:
            return _fail(EXIT_INVOKE, "invoke", e)
        if "--allocations" in argv:
            sys.stderr.flush()
            interp.print_allocations()
        return 0

    inputs = np.load(argv[3], allow_pickle=False)
    out_index = int(argv[5]) if len(argv) > 5 else 0
    outputs = []
    for i, x in enumerate(inputs):
        try:
            interp.set_input(np.ascontiguousarray(x), 0)
        except Exception as e:
            return _fail(EXIT_INPUT, f"set_input(sample {i})", e)
        try:
            interp.invoke()
        except Exception as e:
            return _fail(EXIT_INVOKE, f"invoke(sample {i})", e)
        outputs.append(interp.get_output(out_index))
    np.save(argv[4], np.stack(outputs) if outputs else np.zeros((0,)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
