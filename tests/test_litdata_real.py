"""`LitData` on chunks written by the real `litdata.optimize` (the fast tests in test_data_compat.py use a stand-in
for the package's streaming classes; this one runs the package itself)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import litdata

from litgpt.data import LitData

pytestmark = pytest.mark.slow  # litdata spawns its workers (about 30 s); CI runs it


def token_row(i: int) -> torch.Tensor:
    """Item `i` of the tiny corpus: 100 consecutive token ids (module level, so spawned workers can import it)."""
    return torch.arange(i * 100, i * 100 + 100, dtype=torch.int32)


def test_litdata_module_streams_optimized_token_chunks(tmp_path: Path):
    for split in ("train", "val"):
        litdata.optimize(fn=token_row, inputs=list(range(6)), output_dir=str(tmp_path / split), chunk_size=128,
                         item_loader=litdata.TokensLoader(), num_workers=1, mode="overwrite")
    module = LitData(data_path=tmp_path, split_names=("train", "val"))
    module.connect(None, batch_size=2, max_seq_length=16)
    module.setup()
    assert len(module.train_dataset) > 0 and len(module.val_dataset) > 0
    window = module.train_dataset[0]
    assert window.numel() == 17 and torch.equal(window - window[0], torch.arange(17, dtype=window.dtype))
    batch = module.collate([module.train_dataset[0], module.train_dataset[1]])
    assert batch["input_ids"].shape == (2, 16) and batch["labels"].shape == (2, 16)
    assert torch.equal(batch["labels"][0], batch["input_ids"][0] + 1)  # the next token of a consecutive run
