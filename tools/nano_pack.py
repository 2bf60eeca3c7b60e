"""Pack a trained nano arm for the trip back from the device machine, and unpack it here (session tooling for
tools/nano_gpu_run.sh and recipes/nano/train.py --pack; tools/README.md). The device tool returns at most 8 files
of 16 MiB, 64 MiB in all, and two arms of bf16 weights are ~76 MB: each bf16 tensor's bytes are split into a
high-byte plane (sign and exponent: few values) and a low-byte plane and zlib-compressed (~69 % of the size),
with the config and the runs' metrics, in one tar cut into pieces of at most 15 MiB.

    python tools/nano_pack.py RUNS/ARM/stage2/final ARM RUNS/ARM OUT    # there: OUT/ARM.tar.00, .01, ...
    python tools/nano_pack.py --unpack PIECES_DIR ARM DEST               # here: DEST/ARM/model.safetensors, ...
    python -m pytest -q -n 0 tools/test_tools.py                         # the round trip, on CPU
"""

import io
import json
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save, save_file

PIECE = 15 * 2**20


def planes(weights: dict[str, torch.Tensor]) -> tuple[bytes, list]:
    index, chunks = [], []
    for name, tensor in weights.items():
        chunks.append(tensor.contiguous().view(torch.int16).numpy().view(np.uint8).reshape(-1, 2))
        index.append([name, list(tensor.shape)])
    pairs = np.concatenate(chunks)
    return zlib.compress(pairs[:, 1].tobytes() + pairs[:, 0].tobytes(), 6), index


def unplanes(blob: bytes, index: list) -> dict[str, torch.Tensor]:
    data = np.frombuffer(zlib.decompress(blob), dtype=np.uint8)
    pairs = np.stack([data[len(data) // 2:], data[:len(data) // 2]], axis=1).copy()
    values, weights, start = pairs.view(np.int16).reshape(-1), {}, 0
    for name, shape in index:
        count = int(np.prod(shape))
        weights[name] = torch.from_numpy(values[start:start + count].copy()).view(torch.bfloat16).reshape(shape)
        start += count
    return weights


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def pack(final: Path, arm: str, runs: Path, out: Path) -> None:
    weights = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
               for k, v in load_file(final / "model.safetensors").items()}
    bf16 = {k: v for k, v in weights.items() if v.dtype == torch.bfloat16}
    blob, index = planes(bf16)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        add(tar, f"{arm}/model.planes.zlib", blob)
        add(tar, f"{arm}/model.planes.json", json.dumps(index).encode())
        add(tar, f"{arm}/model.other.safetensors", save({k: v for k, v in weights.items() if k not in bf16}))
        add(tar, f"{arm}/packed_from.txt", f"{final}\n".encode())   # the final folder or an earlier checkpoint
        for path in (final / "config.json", final / "generation_config.json"):
            tar.add(path, arcname=f"{arm}/{path.name}")
        for path in [*sorted(runs.glob("stage*/metrics.jsonl")), *sorted(runs.glob("stage*/config.json"))]:
            tar.add(path, arcname=f"{arm}/runs/{path.relative_to(runs)}")
    data = buffer.getvalue()
    for number, start in enumerate(range(0, len(data), PIECE)):
        (out / f"{arm}.tar.{number:02d}").write_bytes(data[start:start + PIECE])
    print(f"{arm}: {len(data) / 2**20:.1f} MiB in {len(range(0, len(data), PIECE))} pieces", flush=True)


def unpack(pieces: Path, arm: str, dest: Path) -> Path:
    data = b"".join(path.read_bytes() for path in sorted(pieces.glob(f"{arm}.tar.[0-9][0-9]")))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    folder = dest / arm
    index = json.loads((folder / "model.planes.json").read_text())
    weights = unplanes((folder / "model.planes.zlib").read_bytes(), index)
    weights.update(load_file(folder / "model.other.safetensors"))
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    for name in ("model.planes.zlib", "model.planes.json", "model.other.safetensors"):
        (folder / name).unlink()
    print(f"{arm}: {folder}", flush=True)
    return folder


if __name__ == "__main__":
    if sys.argv[1] == "--unpack":
        unpack(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
    else:
        pack(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
