"""Pack a trained arm for the trip back from the device machine: bf16 weights + config + metrics in one tar,
split into pieces of at most 15 MiB (the device tool returns at most 8 files of 16 MiB).

    python recipes/nano/pack.py RUNS/ARM/stage2/final ARM RUNS/ARM OUT      # writes OUT/ARM.tar.00, .01, ...
    cat OUT/ARM.tar.* > ARM.tar && tar xf ARM.tar                          # here, to unpack
"""

import io
import sys
import tarfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save

PIECE = 15 * 2**20


def main() -> None:
    final, arm, runs, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    weights = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
               for k, v in load_file(final / "model.safetensors").items()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = save(weights, metadata={"format": "pt"})
        info = tarfile.TarInfo(f"{arm}/model.safetensors")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for path in (final / "config.json", final / "generation_config.json"):
            tar.add(path, arcname=f"{arm}/{path.name}")
        for path in [*sorted(runs.glob("stage*/metrics.jsonl")), *sorted(runs.glob("stage*/config.json"))]:
            tar.add(path, arcname=f"{arm}/runs/{path.relative_to(runs)}")
    blob = buffer.getvalue()
    for number, start in enumerate(range(0, len(blob), PIECE)):
        (out / f"{arm}.tar.{number:02d}").write_bytes(blob[start:start + PIECE])
    print(f"{arm}: {len(blob) / 2**20:.1f} MiB in {len(range(0, len(blob), PIECE))} pieces", flush=True)


if __name__ == "__main__":
    main()
