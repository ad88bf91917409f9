"""Runs `python -m hfmed.train ARGS...`, parked at a chosen point so the test can SIGKILL it there.

    python stop_point.py MARKER backward N   recipe.yaml [--resume latest]   # inside the N-th backward pass
    python stop_point.py MARKER checkpoint S recipe.yaml [--resume latest]   # checkpoint S written, not renamed

The module runs exactly as `python -m` runs it (runpy, as `__main__`); only `torch.Tensor.backward` or
`accelerate.Accelerator.save_state` is wrapped: at the chosen point the process writes MARKER and sleeps, and
the test kills it with SIGKILL. The checkpoint point is after `save_state` has written every file of checkpoint S under its temporary name and
before the trainer state and the rename: the worst moment, a folder that looks complete but is not.
"""

import runpy
import sys
import time
from pathlib import Path

import accelerate
import torch


def park(marker: Path, where: str) -> None:
    marker.write_text(where)
    time.sleep(3600)  # the test kills us here


def main() -> None:
    marker, point, count, *argv = sys.argv[1:]
    marker, count = Path(marker), int(count)
    if point == "backward":
        # torch's own entry point: the loop calls it directly or through `Accelerator.backward`
        # (`hfmed.train.StepCalls`), so the point is the same whichever path the run takes.
        original = torch.Tensor.backward
        calls = [0]

        def backward(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == count:
                park(marker, f"backward {count}")
            return original(self, *args, **kwargs)

        torch.Tensor.backward = backward
    elif point == "checkpoint":
        original_save = accelerate.Accelerator.save_state

        def save_state(self, output_dir=None, **kwargs):
            result = original_save(self, output_dir, **kwargs)
            if Path(output_dir).name.startswith(f"step_{count:06d}"):
                park(marker, f"checkpoint {output_dir}")
            return result

        accelerate.Accelerator.save_state = save_state
    else:
        raise SystemExit(f"unknown stop point {point!r}: use backward or checkpoint")
    sys.argv = ["hfmed.train", *argv]
    runpy.run_module("hfmed.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
