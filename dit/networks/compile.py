"""`--compile` for training and sampling alike: torch.compile a network's blocks, or say in one line why not."""

from __future__ import annotations

from dit.errors import UserError
from dit.networks.base import CompileBlocks, require


def compile_network(net, best_effort: bool, backward: bool = True) -> bool:
    """torch.compile the network's blocks; True if compiled. A network without the CompileBlocks
    capability is a UserError; so is a failure, unless `best_effort`, in which case the network runs
    eagerly and the caller reports it."""
    require(net, CompileBlocks, "--compile")
    if net.compile_blocks(backward=backward):
        print("compile: the transformer blocks are compiled (torch.compile)")
        return True
    reason = net.compile_error or "unknown reason"
    if not best_effort:
        raise UserError(f"--compile: torch.compile failed ({reason}); fix the compiler toolchain (a C++ compiler, "
                        "Triton on GPU) or pass --compile-best-effort to run eagerly")
    print(f"compile: FAILED ({reason}); running eagerly as --compile-best-effort allows")
    return False
