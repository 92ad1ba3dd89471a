"""Whether optional packages are installed (LitGPT's `litgpt.constants` flags).

Each flag is a `lightning_utilities` `RequirementCache`: truthy when the requirement is met, and its `str()` says
how to install it when not. Checked lazily (the first `bool()`), so importing this module is cheap.
Layer 0: imports nothing from the project.
"""

from lightning_utilities.core.imports import RequirementCache

_BITANDBYTES_AVAILABLE = RequirementCache("bitsandbytes")
_BITANDBYTES_AVAILABLE_NOT_EQUAL_0_42_0 = RequirementCache("bitsandbytes != 0.42.0")
_HF_TRANSFER_AVAILABLE = RequirementCache("hf_transfer")
_JINJA2_AVAILABLE = RequirementCache("jinja2")
_LITDATA_AVAILABLE = RequirementCache("litdata")
_LITLOGGER_AVAILABLE = RequirementCache("litlogger>=0.1.7")
_LITSERVE_AVAILABLE = RequirementCache("litserve")
_LM_EVAL_AVAILABLE = RequirementCache("lm-eval")
_MLFLOW_AVAILABLE = RequirementCache("mlflow")
_MLFLOW_SKINNY_AVAILABLE = RequirementCache("mlflow-skinny")
_REQUESTS_AVAILABLE = RequirementCache("requests")
_SAFETENSORS_AVAILABLE = RequirementCache("safetensors")
_SENTENCEPIECE_AVAILABLE = RequirementCache("sentencepiece")
_TENSORBOARD_AVAILABLE = RequirementCache("tensorboard")
_THUNDER_AVAILABLE = RequirementCache("thunder")
_TORCH_EQUAL_2_7 = RequirementCache("torch>=2.7.0,<2.8")
_TORCH_EQUAL_2_8 = RequirementCache("torch>=2.8.0,<2.9")
_TRITON_AVAILABLE = RequirementCache("triton")
_WANDB_AVAILABLE = RequirementCache("wandb")

_SUPPORTED_LOGGERS = ("csv", "tensorboard", "wandb", "mlflow", "litlogger")
