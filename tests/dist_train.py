"""Run train.py's main under torchrun, then let every rank write the weights it holds (for the tests).

    torchrun --nproc_per_node 2 tests/dist_train.py OUT_DIR [train.py arguments...]
    DIT_TEST_ENTRY=train_classifier torchrun ... (train_classifier.py's arguments)

DDP: each rank writes its own replica (they must be identical). FSDP: each rank writes the
weights gathered from all shards (a collective), which must then agree with DDP's.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import importlib  # noqa: E402

from dit.training import loop  # noqa: E402
from dit.training import parallel as parallel_module  # noqa: E402


def main():
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    captured = {}
    real = loop.make_parallel

    def remember(*args, **kwargs):
        captured["parallel"] = real(*args, **kwargs)
        return captured["parallel"]

    loop.make_parallel = remember
    if os.environ.get("DIT_TEST_BLIND_RANK") == os.environ.get("RANK"):  # this process sees no checkpoints
        from dit.training import state

        state.list_checkpoints = lambda run_dir: []
    fail_rank = os.environ.get("DIT_TEST_FAIL_RANK")
    if fail_rank is not None and os.environ.get("RANK") == fail_rank:  # one process dies mid-run
        from dit.processes.gaussian import GaussianDiffusion

        real_losses, calls = GaussianDiffusion.training_losses, []

        def failing(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == int(os.environ["DIT_TEST_FAIL_STEP"]):
                raise RuntimeError(f"injected failure on rank {fail_rank}")
            return real_losses(self, *args, **kwargs)

        GaussianDiffusion.training_losses = failing
    importlib.import_module(os.environ.get("DIT_TEST_ENTRY", "train")).main(argv)  # train or train_classifier
    from safetensors.torch import save_file

    par = captured["parallel"]
    if isinstance(par, parallel_module.Sharded):  # gathered on the main process only: the others write nothing
        weights, ema = par._full(list(par.model.parameters())), par._full(par.shadow)
        if not weights:
            return
    else:
        weights, ema = par.net.state_dict(), par.ema.state_dict()
    rank = int(os.environ.get("RANK", 0))
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(out / f"rank{rank}_model.safetensors"))
    save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, str(out / f"rank{rank}_ema.safetensors"))


if __name__ == "__main__":
    main()
