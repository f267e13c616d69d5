#!/usr/bin/env python3
"""Copies a Falcon model directory, keeping its function but not its size: the bf16 weights
widened to fp32 (lossless, twice the bytes), and/or the MLP's hidden width padded with zeros to
--ffn-hidden-size (GELU(0) = 0, so the extra units add exactly nothing). Benchmarks use it to run
a trained model at the sizes where a decode step streams its weights from memory. Standard library
only.

    widen_checkpoint.py SRC DST [--fp32] [--ffn-hidden-size N]
"""
import array
import json
import shutil
import struct
import sys
from pathlib import Path


def pad_ffn(name: str, t: dict, blob: bytes, ffn: int) -> tuple[dict, bytes]:
    """Zero rows of dense_h_to_4h, zero columns of dense_4h_to_h, up to ffn units."""
    if len(t["shape"]) != 2:
        return t, blob
    size = {"BF16": 2, "F16": 2, "F32": 4}[t["dtype"]]
    rows, cols = t["shape"]
    if name.endswith("mlp.dense_h_to_4h.weight"):
        return dict(t, shape=[ffn, cols]), blob + bytes((ffn - rows) * cols * size)
    if name.endswith("mlp.dense_4h_to_h.weight"):
        pad = bytes((ffn - cols) * size)
        out = b"".join(blob[r * cols * size : (r + 1) * cols * size] + pad for r in range(rows))
        return dict(t, shape=[rows, ffn]), out
    return t, blob


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    fp32 = "--fp32" in sys.argv
    ffn = 0
    if "--ffn-hidden-size" in sys.argv:
        ffn = int(sys.argv[sys.argv.index("--ffn-hidden-size") + 1])
        args = [a for a in args if a != str(ffn)]
    src, dst = Path(args[0]), Path(args[1])
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
    for f in sorted(src.glob("*.safetensors")):
        raw = f.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8 : 8 + n])
        data = raw[8 + n :]
        out_header, chunks, offset = {}, [], 0
        for name, t in sorted(header.items(), key=lambda kv: kv[1].get("data_offsets", [0])[0] if kv[0] != "__metadata__" else -1):
            if name == "__metadata__":
                out_header[name] = t
                continue
            a, b = t["data_offsets"]
            blob = data[a:b]
            if ffn:
                t, blob = pad_ffn(name, t, blob, ffn)
            if fp32 and t["dtype"] == "BF16":
                half = array.array("H", blob)
                wide = array.array("I", (h << 16 for h in half))
                blob = wide.tobytes()
                t = dict(t, dtype="F32")
            out_header[name] = dict(t, data_offsets=[offset, offset + len(blob)])
            chunks.append(blob)
            offset += len(blob)
        head = json.dumps(out_header, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        with open(dst / f.name, "wb") as out:
            out.write(struct.pack("<Q", len(head)))
            out.write(head)
            for c in chunks:
                out.write(c)
    cfg = dst / "config.json"
    if cfg.exists():
        c = json.loads(cfg.read_text())
        if fp32:
            c["torch_dtype"] = c["dtype"] = "float32"
        if ffn:
            c["ffn_hidden_size"] = ffn
        cfg.write_text(json.dumps(c, indent=2) + "\n")


if __name__ == "__main__":
    main()
