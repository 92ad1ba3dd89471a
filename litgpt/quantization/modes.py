"""The quantization modes, their names on the command line, and the `quantization.yaml` of a saved checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import yaml

from litgpt.quantization.portable import INT4_GROUP_SIZES

DEFAULT_INT4_GROUP_SIZE = 64
BNB_MODES = ("bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq", "bnb.int8")
PORTABLE_MODES = ("int8", "int4", *(f"int4-g{g}" for g in INT4_GROUP_SIZES))
MODES = BNB_MODES + PORTABLE_MODES
"""Every value `--quantize` takes. `int4` is `int4-g64`."""

QUANTIZATION_FILE = "quantization.yaml"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class QuantSpec:
    """One quantization mode, parsed.

    Attributes:
        mode: the canonical name (`int4` is spelled `int4-g64`).
        method: "int8", "int4" (portable, plain PyTorch) or "bnb" (bitsandbytes).
        group_size: int4 group size (input features per scale), None otherwise.
        bnb_type: for bitsandbytes: "nf4", "fp4" or "int8".
        double_quant: bitsandbytes 4-bit "-dq": the scales are quantized too.
    """

    mode: str
    method: str
    group_size: Optional[int] = None
    bnb_type: Optional[str] = None
    double_quant: bool = False

    @property
    def is_bnb(self) -> bool:
        return self.method == "bnb"


def parse_quantize(quantize: Optional[Union[str, QuantSpec]]) -> Optional[QuantSpec]:
    """`--quantize` value -> QuantSpec (None stays None); a ValueError lists the valid modes.

    Args:
        quantize: one of `MODES`, a QuantSpec, or None.
    """
    if quantize is None or isinstance(quantize, QuantSpec):
        return quantize
    name = str(quantize).strip().lower()
    if name in ("none", ""):
        return None
    if name == "int8":
        return QuantSpec("int8", "int8")
    if name == "int4":
        name = f"int4-g{DEFAULT_INT4_GROUP_SIZE}"
    if name.startswith("int4-g") and name[len("int4-g"):].isdigit():
        group = int(name[len("int4-g"):])
        if group in INT4_GROUP_SIZES:
            return QuantSpec(name, "int4", group_size=group)
        raise ValueError(f"--quantize {quantize}: the int4 group size must be one of {INT4_GROUP_SIZES}")
    if name in BNB_MODES:
        kind = name.removeprefix("bnb.")
        return QuantSpec(name, "bnb", bnb_type=kind.removesuffix("-dq"), double_quant=kind.endswith("-dq"))
    raise ValueError(f"unknown quantization mode {quantize!r}; expected one of {', '.join(MODES)}")


def read_quantization_file(checkpoint_dir: Union[str, Path]) -> Optional[QuantSpec]:
    """The mode a saved quantized checkpoint was written with, None when the folder has no `quantization.yaml`.

    Args:
        checkpoint_dir: the checkpoint folder.
    """
    path = Path(checkpoint_dir) / QUANTIZATION_FILE
    if not path.is_file():
        return None
    from litgpt.utils import read_yaml

    data = read_yaml(path)
    if not isinstance(data, dict) or "mode" not in data:
        raise ValueError(f"{path} must be a mapping with a 'mode' key")
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {version}; this litgpt reads version {FORMAT_VERSION}")
    spec = parse_quantize(data["mode"])
    if spec is None:
        raise ValueError(f"{path} names no quantization mode")
    return spec


def quantization_file_text(spec: QuantSpec, precision: str) -> str:
    """The YAML written next to a quantized `lit_model.pth`."""
    data = {
        "mode": spec.mode,
        "group_size": spec.group_size,
        "precision": precision,
        "format_version": FORMAT_VERSION,
    }
    return yaml.safe_dump(data, sort_keys=False)
