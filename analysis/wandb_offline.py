"""Reading the metric history of a Weights & Biases run from its local `.wandb` file (offline or synced runs),
so the analysis needs neither a login nor the network.

The file is a LevelDB-style log: a 7-byte header (`:W&B`, magic, version), then 32 KiB blocks of chunks, each
with a 7-byte header (CRC-32, little-endian length, type: 1 full, 2 first, 3 middle, 4 last) holding serialised
`wandb_internal_pb2.Record` protobufs; `history` records carry one logged step as key / JSON-value items.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def log_records(path: Path) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path} is not a wandb run file (no ':W&B' header)")
    position, pending = HEADER_SIZE, b""
    while position + HEADER_SIZE <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < HEADER_SIZE:  # block trailer padding
            position += left_in_block
            continue
        length = int.from_bytes(data[position + 4:position + 6], "little")
        kind = data[position + 6]
        chunk = data[position + HEADER_SIZE:position + HEADER_SIZE + length]
        position += HEADER_SIZE + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
        elif kind == 0 and length == 0:  # zero padding at the end of a block
            position += left_in_block - HEADER_SIZE
        else:
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {position}")


def wandb_history(path: Path) -> pd.DataFrame:
    """One row per logged step: `step` (the logged step, else wandb's `_step`) and every numeric metric."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in log_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            value = json.loads(item.value_json)
            if isinstance(value, (int, float)):
                row[key] = value
        row["step"] = row.get("trainer/global_step", row.get("step", row.get("_step")))
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.drop(columns=[c for c in ("_step", "_runtime", "_timestamp", "trainer/global_step")
                               if c in frame])


def find_wandb_file(run_dir: Path) -> Path | None:
    files = sorted(Path(run_dir).glob("wandb/*run-*/run-*.wandb"))
    return files[-1] if files else None
