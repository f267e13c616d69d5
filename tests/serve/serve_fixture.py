"""What the serving test scripts share without third-party packages: the fixture model directory
and the saker processes of a rank."""

import os
import shutil

MODEL_FIXTURE = "gqa8x4-bf16-sharded"
TOKENIZER_FIXTURE = os.path.join("tokenizers", "small384")


def model_dir(fixtures, workdir, name="demo"):
    """WORKDIR/NAME holding the 2-layer fixture checkpoint and the small tokenizer (the served
    model's name is the directory's)."""
    d = os.path.join(workdir, name)
    os.makedirs(d)
    src = os.path.join(fixtures, MODEL_FIXTURE)
    for f in os.listdir(src):
        if f == "config.json" or (f.startswith("model") and ".safetensors" in f):
            shutil.copy(os.path.join(src, f), d)
    shutil.copy(os.path.join(fixtures, TOKENIZER_FIXTURE, "tokenizer.json"), d)
    return d


def saker_ranks(rank):
    """Pids of the saker processes of MPI rank `rank`, in any namespace."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != "saker":
                    continue
            with open(f"/proc/{d}/environ", "rb") as f:
                if f"OMPI_COMM_WORLD_RANK={rank}".encode() in f.read().split(b"\0"):
                    found.append(int(d))
        except OSError:
            pass
    return found


def rss_mb(pid):
    """A process's resident memory, MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
