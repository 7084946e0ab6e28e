"""Compile the layer's fused kernels for a CUDA GPU without one: what each tile costs the GPU.

Each of catneuron.model.triton_local's host functions is called on CPU tensors of the paper's stage-1
window (kernel 18, 3 channels, 8 maps) with its kernel replaced by a recorder, so the kernels are built
exactly as they would be launched (tile sizes, warps, constants); they are then compiled ahead of time
for `--arch` (90: H100/H200, 80: A100) with the Triton in this environment. Prints, per kernel and dtype,
registers per thread, bytes spilled to local memory (stack), shared memory, and the tensor-core
instruction used, if any. Needs Triton with its CUDA backend, not a GPU; TRITON_INTERPRET must be unset.

    python benchmarks/gpu_compile.py [--arch 90] [--dtypes float32 bf16] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from catneuron.model import triton_local
from catneuron.model.local_reference import TILE_BYTES, Geometry

KERNELS = ("_contract_kernel", "_spread_kernel", "_correlate_kernel")
DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}
POINTER = {torch.float32: "*fp32", torch.bfloat16: "*bf16"}


def launches(dtype: torch.dtype, maps: int) -> dict[str, tuple[tuple, dict]]:
    """How contract, spread and correlate launch their kernels on a small image with the paper's window (recorded
    from `triton_local._launch`, the one place the ops launch)."""
    geo = Geometry(24, 24, 3, 18, 1, 64, TILE_BYTES, torch.finfo(dtype).bits // 8)
    positions, fan_in = geo.out_h * geo.out_w, 18 * 18 * 3
    image = torch.zeros(24, 24, 3, 64, dtype=dtype)
    weight, codes = torch.zeros(positions, maps, fan_in, dtype=dtype), torch.zeros(positions, maps, 64, dtype=dtype)
    recorded: dict[str, tuple[tuple, dict]] = {}
    names = {getattr(triton_local, name): name for name in KERNELS}

    def record(kernel, grid, *args, warps):
        recorded[names[kernel]] = (args, {"num_warps": warps})

    launch = triton_local._launch
    triton_local._launch = record
    try:
        triton_local.contract(image, weight, geo)
        triton_local.spread(codes, weight, geo)
        triton_local.correlate(image, codes, geo)
    finally:
        triton_local._launch = launch
    return recorded


def compile_one(name: str, args: tuple, options: dict, arch: int) -> dict:
    kernel = getattr(triton_local, name)
    signature, constants = {}, {}
    for param, arg in zip(kernel.params, args, strict=True):
        if param.is_constexpr:
            signature[param.name], constants[param.name] = "constexpr", arg
        else:
            signature[param.name] = POINTER[arg.dtype] if isinstance(arg, torch.Tensor) else "i32"
    compiled = triton.compile(ASTSource(kernel, signature, constexprs=constants), target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": options["num_warps"]})
    mma = re.search(r"\b(wgmma\.mma_async[\w.]*|mma\.sync[\w.]*)", compiled.asm["ptx"])
    return {"kernel": name.strip("_").removesuffix("_kernel"), "warps": options["num_warps"],
            "tensor_cores": mma.group(1) if mma else None, "shared_bytes": compiled.metadata.shared,
            **resources(compiled.asm["cubin"])}


def resources(cubin: bytes) -> dict:
    """Registers and stack (spills) of a cubin, as cuobjdump reads them."""
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", file.name], capture_output=True, text=True,
                               check=True).stdout
    fields = dict(re.findall(r"\b(REG|STACK):(\d+)", usage))
    return {"registers": int(fields["REG"]), "stack_bytes": int(fields["STACK"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, major and minor: 90, 80, ...")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--maps", type=int, default=8, help="maps per position (the paper's: 8)")
    parser.add_argument("--tf32", action="store_true", help="float32 on tensor cores, as after "
                        "torch.set_float32_matmul_precision('high'); IEEE float32 otherwise")
    parser.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    args = parser.parse_args()
    if args.tf32:
        torch.set_float32_matmul_precision("high")
    rows = []
    for dname in args.dtypes:
        for name, (launch_args, options) in launches(DTYPES[dname], args.maps).items():
            rows.append({"dtype": dname, **compile_one(name, launch_args, options, args.arch)})
    if args.json:
        print(json.dumps(rows))
        return
    print(f"Triton {triton.__version__}, sm_{args.arch}, {args.maps} maps, float32 {'TF32' if args.tf32 else 'IEEE'}")
    for row in rows:
        print(f"  {row['dtype']:8s} {row['kernel']:10s} {row['warps']} warps {row['registers']:4d} registers "
              f"{row['stack_bytes']:4d} B spilled {row['shared_bytes']:6d} B shared  "
              f"{row['tensor_cores'] or 'no tensor cores'}")


if __name__ == "__main__":
    main()
