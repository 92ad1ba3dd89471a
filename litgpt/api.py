"""`LLM`: load a model by registry name or checkpoint folder, put it on a device, generate, benchmark, save.

    from litgpt import LLM

    llm = LLM.load("checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct")
    print(llm.generate("What do llamas eat?", max_new_tokens=50))
    for piece in llm.generate("Tell me a story", stream=True):
        print(piece, end="", flush=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional, Sequence, Union

import torch

from litgpt.config import Config
from litgpt.precision import (
    INFERENCE_PRECISIONS,
    check_inference_precision,
    default_inference_precision,
    resolve_device,
)
from litgpt.generate.engine import Generation, TextRow, check_sampling_args, compile_decode_step
from litgpt.model import GPT
from litgpt.prompts import PromptStyle, resolve_prompt_style, save_prompt_style
from litgpt.tokenizer import Tokenizer
from litgpt.quantization.modes import QUANTIZATION_FILE
from litgpt.utils import (
    MappedFilePages,
    check_valid_checkpoint_dir,
    chunked_cross_entropy,
    copy_side_files,
    load_state_dict,
    save_atomic,
)
from litgpt.checkpoint import check_tokenizer_fits, load_checkpoint

DEFAULT_CHECKPOINTS = Path("checkpoints")


def check_quantize(quantize: Optional[str]) -> None:
    """Raises a one-line ValueError for an unknown quantization mode (before any model is loaded).

    Args:
        quantize: None or a mode of `litgpt.quantization.MODES` (int8, int4, int4-g32/64/128, bnb.*).
    """
    if quantize is not None:
        from litgpt.quantization.modes import parse_quantize

        parse_quantize(quantize)


class Preprocessor:
    """Text <-> token ids on a device (LitGPT's `LLM.preprocessor`)."""

    def __init__(self, tokenizer: Tokenizer, device: str = "cpu") -> None:
        self.tokenizer = tokenizer
        self.device = device

    def encode(self, text: str) -> torch.Tensor:
        """The token ids of `text` (with the tokenizer's BOS where it adds one) on the device."""
        return self.tokenizer.encode(text, device=self.device)

    def decode(self, token_ids: torch.Tensor) -> str:
        """The text of `token_ids`."""
        return self.tokenizer.decode(token_ids)


class LLM(torch.nn.Module):
    """A model, its tokenizer and its prompt style, ready to generate; also a `torch.nn.Module` whose forward is the
    model's (logits, or logits and loss), so it trains in a Lightning `Trainer` (tutorials/python-api.md).

    Make one with `LLM.load(...)`; it is placed on a device by `load` (default) or by `distribute(...)`.

    Attributes:
        model: the `GPT`.
        tokenizer: the `Tokenizer`; `preprocessor` wraps it with a device (LitGPT's name).
        prompt_style: the `PromptStyle` applied to each prompt.
        config: the model's `Config`.
        checkpoint_dir: the folder the weights came from (None for init="random").
        device / precision: where and in which precision the model runs (None before `distribute`).
        fixed_kv_cache_size: the fixed KV cache length set by `distribute`, if any.
        step_fn: the decode step (compiled by `distribute(compile=True)`), None for the eager one.
    """

    def __init__(
        self,
        model: GPT,
        preprocessor: Union[Tokenizer, Preprocessor, None] = None,
        prompt_style: Optional[PromptStyle] = None,
        devices: Union[int, list[int], None] = None,
        config: Optional[Config] = None,
        checkpoint_dir: Optional[Path] = None,
        fabric: Any = None,
        generate_strategy: Optional[Literal["sequential", "tensor_parallel"]] = None,
        kv_cache_initialized: bool = False,
        fixed_kv_cache_size: Union[int, Literal["max_model_supported"], None] = None,
        tokenizer: Optional[Tokenizer] = None,
    ) -> None:
        """Wraps an already built model; most code uses `LLM.load` instead. LitGPT's arguments are accepted
        (`devices`, `fabric`, `generate_strategy`, `kv_cache_initialized` are set by `distribute` here).

        Args:
            model: the model (on the CPU or the meta-free device of your choice).
            preprocessor: its tokenizer (a `Tokenizer`, or LitGPT's `Preprocessor`).
            prompt_style: the prompt style (default: the registry table's style for `model.config.name`).
            devices: ignored (see `distribute`).
            config: the model's config (default: `model.config`).
            checkpoint_dir: where the model was loaded from, if anywhere.
            fabric: ignored (see `distribute`).
            generate_strategy: ignored (see `distribute`).
            kv_cache_initialized: ignored (the KV cache is sized per call or by `distribute`).
            fixed_kv_cache_size: see `distribute`.
            tokenizer: the tokenizer, when given by keyword.
        """
        super().__init__()
        if isinstance(preprocessor, Preprocessor):
            preprocessor = preprocessor.tokenizer
        tokenizer = tokenizer or preprocessor
        if tokenizer is None:
            raise ValueError("LLM needs the model's tokenizer: LLM(model, tokenizer) or LLM.load(...)")
        if config is not None and model.config is not config:
            model.config = config
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.preprocessor = Preprocessor(tokenizer, device="cpu")
        self.prompt_style = prompt_style or PromptStyle.from_config(model.config)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.device: Optional[torch.device] = None
        self.precision: Optional[str] = None
        self.quantize: Optional[str] = None
        self.fixed_kv_cache_size = fixed_kv_cache_size if isinstance(fixed_kv_cache_size, int) else None
        self.step_fn = None

    # ------------------------------------------------------------------------------------------------ nn.Module

    def state_dict(self, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> dict[str, Any]:
        """The model's state dict (the same keys as `lit_model.pth`)."""
        return self.model.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Loads `state_dict` (the keys of `lit_model.pth`) into the model."""
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(
        self, input_ids: torch.Tensor, target_ids: Optional[torch.Tensor] = None,
        loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    ) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The model's logits (B, T, V) for `input_ids` (B, T); with `target_ids` (B, T) also the loss of predicting
        each next target: `loss_fn(logits[:, :-1], target_ids[:, 1:])` (default: mean cross-entropy over the
        targets that are not -100)."""
        logits = self.model(input_ids)
        if target_ids is None:
            return logits
        loss_fn = loss_fn or chunked_cross_entropy
        return logits, loss_fn(logits[..., :-1, :], target_ids[..., 1:])

    def trainer_setup(self, trainer_ckpt: Optional[Path] = None) -> None:
        """Prepares the model for training in a Lightning `Trainer`: loads the weights of `trainer_ckpt` (a Trainer
        checkpoint or a `lit_model.pth`) or, without it, of `checkpoint_dir`, and switches to training mode."""
        if trainer_ckpt is not None:
            state = load_state_dict(trainer_ckpt)
            if "state_dict" in state and isinstance(state["state_dict"], dict):  # a Lightning Trainer checkpoint
                state = {k.split("model.", 1)[1]: v for k, v in state["state_dict"].items() if "model." in k}
            self.model.load_state_dict(state)
        elif self.checkpoint_dir is not None and (self.checkpoint_dir / "lit_model.pth").is_file():
            load_checkpoint(self.model, self.checkpoint_dir / "lit_model.pth")
        else:
            raise ValueError(
                "trainer_setup found no weights: pass trainer_ckpt, or load the LLM from a checkpoint folder with "
                "lit_model.pth"
            )
        self.model.clear_kv_cache()
        self.model.train()

    @property
    def config(self) -> Config:
        """The model's `Config`."""
        return self.model.config

    # ------------------------------------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        model: str,
        init: Literal["pretrained", "random"] = "pretrained",
        tokenizer_dir: Optional[Union[str, Path]] = None,
        access_token: Optional[str] = None,
        distribute: Optional[Literal["auto"]] = "auto",
    ) -> "LLM":
        """Loads a model from a checkpoint folder or by registry name.

        Args:
            model: a checkpoint folder (`lit_model.pth` + `model_config.yaml` + tokenizer files), or a registry
                name (`Llama-3.2-1B-Instruct` or `meta-llama/Llama-3.2-1B-Instruct`). With init="pretrained" a
                name is looked up in `checkpoints/<org>/<name>` and downloaded (and converted) there if missing.
            init: "pretrained" loads the weights; "random" builds a randomly initialised model of the config
                (from the folder's `model_config.yaml` or the registry), which needs `tokenizer_dir` unless
                `model` is a folder with tokenizer files.
            tokenizer_dir: folder holding the tokenizer files (default: the checkpoint folder).
            access_token: Hugging Face token for gated repos (download only).
            distribute: "auto" puts the model on the best device in its default precision (see `distribute`);
                None leaves it on the CPU as loaded, for a later `distribute(...)` call.

        Returns:
            The `LLM`.
        """
        if init not in ("pretrained", "random"):
            raise ValueError(f"init must be 'pretrained' or 'random', got {init!r}")
        if distribute not in ("auto", None):
            raise ValueError(f"distribute must be 'auto' or None, got {distribute!r}")
        if not isinstance(model, (str, Path)) or not str(model).strip():
            raise ValueError(f"model must be a checkpoint folder or a model name, got {model!r}")
        path = Path(model)
        checkpoint_dir: Optional[Path] = None
        if path.is_dir():
            if init == "pretrained":
                checkpoint_dir = check_valid_checkpoint_dir(path)
            config = Config.from_checkpoint(path)
            tokenizer_path = Path(tokenizer_dir) if tokenizer_dir is not None else path
        else:
            if path.exists():
                raise ValueError(f"model must be a checkpoint folder or a model name; {path} is a file")
            try:
                config = Config.from_name(str(model))
            except ValueError as err:
                raise ValueError(f"{model!r} is neither a checkpoint folder nor a known model name. {err}") from None
            if init == "pretrained":
                checkpoint_dir = _pretrained_dir(config, access_token)
                config = Config.from_checkpoint(checkpoint_dir)  # the converted checkpoint's own config
                tokenizer_path = Path(tokenizer_dir) if tokenizer_dir is not None else checkpoint_dir
            else:
                if tokenizer_dir is None:
                    raise ValueError(
                        "init='random' with a model name needs tokenizer_dir (a folder with tokenizer.json or "
                        "tokenizer.model), e.g. one made by `litgpt download REPO --tokenizer_only true`"
                    )
                tokenizer_path = Path(tokenizer_dir)
        tokenizer = Tokenizer(tokenizer_path)
        check_tokenizer_fits(tokenizer, config, checkpoint_dir or model)
        if init == "pretrained" and (checkpoint_dir / QUANTIZATION_FILE).is_file():
            from litgpt.quantization import load_model

            gpt = load_model(checkpoint_dir, device="cpu")  # a `litgpt quantize` folder loads as saved
        elif init == "pretrained":
            with torch.device("meta"):
                gpt = GPT(config)
            load_checkpoint(gpt, checkpoint_dir / "lit_model.pth")
        else:
            gpt = GPT(config)
        style = resolve_prompt_style(checkpoint_dir or (path if path.is_dir() else None), gpt.config, tokenizer)
        llm = cls(gpt, tokenizer, prompt_style=style, checkpoint_dir=checkpoint_dir)
        if distribute == "auto":
            llm.distribute()
        return llm

    def distribute(
        self,
        accelerator: str = "auto",
        devices: Union[int, Literal["auto"]] = 1,
        precision: Optional[str] = None,
        quantize: Optional[str] = None,
        generate_strategy: Optional[str] = None,
        fixed_kv_cache_size: Union[int, Literal["max_model_supported"], None] = None,
        compile: bool = False,
    ) -> "LLM":
        """Moves the model to a device in a precision and prepares generation there.

        Args:
            accelerator: "auto" (CUDA, else MPS, else CPU), "cpu", "cuda" / "gpu" or "mps".
            devices: number of devices; only 1 for now ("auto" means 1).
            precision: "32-true", "bf16-true" or "16-true". Default: bf16-true where the device computes
                bfloat16 natively (CUDA with bf16; CPUs with AVX512-BF16 / AMX), else 32-true. 16-true works
                on the CPU but is slow there.
            quantize: weight quantization, applied while loading the checkpoint: int8 (per-channel), int4 /
                int4-g32 / int4-g64 / int4-g128 (group-wise; portable, CPU and GPU), or the bitsandbytes modes
                bnb.nf4, bnb.nf4-dq, bnb.fp4, bnb.fp4-dq, bnb.int8 (see tutorials/quantize.md).
            generate_strategy: multi-device strategies ("sequential", "tensor_parallel") are not supported yet.
            fixed_kv_cache_size: allocate the KV cache once with this many slots ("max_model_supported": the
                model's context) instead of sizing it per call; it also caps prompt + new tokens.
            compile: compile the decode step with `torch.compile` (the first generation pays the compile time).

        Returns:
            self.
        """
        check_quantize(quantize)
        check_inference_precision(precision)
        if devices == "auto":
            devices = 1
        if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
            raise ValueError(f"devices must be a positive integer or 'auto', got {devices!r}")
        if devices > 1:
            raise NotImplementedError(f"devices={devices}: generation runs on a single device for now; use devices=1")
        if generate_strategy is not None:
            raise NotImplementedError(
                f"generate_strategy={generate_strategy!r}: multi-device generation is not supported yet"
            )
        if fixed_kv_cache_size == "max_model_supported":
            fixed_kv_cache_size = self.model.max_seq_length
        if fixed_kv_cache_size is not None:
            if isinstance(fixed_kv_cache_size, bool) or not isinstance(fixed_kv_cache_size, int) or fixed_kv_cache_size < 2:
                raise ValueError(
                    f"fixed_kv_cache_size must be an integer >= 2 or 'max_model_supported', got {fixed_kv_cache_size!r}"
                )
            if fixed_kv_cache_size > self.model.max_seq_length:
                raise ValueError(
                    f"fixed_kv_cache_size={fixed_kv_cache_size} exceeds the model's context of {self.model.max_seq_length}"
                )
        device = resolve_device(accelerator)
        precision = precision or default_inference_precision(device)
        if precision == "bf16-true" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("precision='bf16-true' is not supported by this GPU; use '16-true' or '32-true'")
        from litgpt.quantization import check_quantize_supported, load_model, quantize_model
        from litgpt.quantization.modes import read_quantization_file

        dtype = INFERENCE_PRECISIONS[precision]
        check_quantize_supported(quantize, device, dtype)
        self.model.clear_kv_cache()
        saved = read_quantization_file(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        if (quantize is not None or saved is not None) and self.checkpoint_dir is not None:
            self.model = None  # free the loaded copy first: quantize while loading, tensor by tensor
            self.model = load_model(self.checkpoint_dir, quantize=quantize, dtype=dtype, device=device)
        elif quantize is not None:  # random init: quantize the model in memory
            self.model = quantize_model(self.model.to(device=device, dtype=dtype), quantize, dtype=dtype, device=device)
        elif device.type == "cpu":
            from litgpt.generate.cpu import pack_weights_in_huge_pages

            # one copy of the weights: each tensor is converted straight into 2 MiB pages (decode streams them
            # ~1.4x faster) and its pages of the memory-mapped checkpoint are dropped at once
            pages = MappedFilePages(self.checkpoint_dir / "lit_model.pth") if self.checkpoint_dir is not None else None
            pack_weights_in_huge_pages(self.model, dtype=dtype, release=pages.release if pages is not None else None)
            self.model = self.model.to(device=device, dtype=dtype).eval()  # buffers (the parameters are done)
        else:
            self.model = self.model.to(device=device, dtype=dtype).eval()
        if device.type == "cpu":
            from litgpt.generate.cpu import pack_weights_in_huge_pages, use_matvec_linears

            use_matvec_linears(self.model)  # batch-1 decode steps read the weights ~1.5x faster
            if quantize is not None or saved is not None:
                pack_weights_in_huge_pages(self.model)  # the quantized tensors too
        self.quantize = quantize if quantize is not None else (saved.mode if saved is not None else None)
        self.device, self.precision = device, precision
        self.preprocessor.device = str(device)
        self.fixed_kv_cache_size = fixed_kv_cache_size
        self.step_fn = compile_decode_step() if compile else None
        return self

    # ------------------------------------------------------------------------------------------------ generating

    def generation(
        self,
        prompt: Union[str, Sequence[str]],
        sys_prompt: Optional[str] = None,
        max_new_tokens: int = 50,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: float = 1.0,
        stop: Union[str, Sequence[str], None] = None,
        return_as_token_ids: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> Generation:
        """A `Generation` for one prompt or a batch: iterate it for `(row, piece)` events, then read its
        texts, token ids and timings. `generate` and `benchmark` are built on it.

        Args:
            prompt, sys_prompt, max_new_tokens, temperature, top_k, top_p, stop, return_as_token_ids:
                as in `generate` (pieces are lists of ids with return_as_token_ids).
            generator: random generator for sampling (on the model's device); default: torch's global one.
        """
        if self.device is None:
            raise RuntimeError("the model is not on a device yet: call llm.distribute(...) first")
        check_sampling_args(temperature, top_k, top_p, max_new_tokens)
        prompts = _check_prompts(prompt)
        stop_strings = _check_stop(stop, self.prompt_style)
        if return_as_token_ids and stop_strings and stop is not None:
            raise ValueError("stop strings need text output: use return_as_token_ids=False with stop")
        if return_as_token_ids:
            stop_strings = []
        ids = []
        for i, p in enumerate(prompts):
            encoded = self.tokenizer.encode(self.prompt_style.apply(p, sys_prompt=sys_prompt), device=self.device)
            if encoded.numel() == 0:
                raise ValueError(f"prompt {i} is empty: it encodes to no tokens")
            ids.append(encoded)
        stop_tokens = self.prompt_style.stop_tokens(self.tokenizer)
        rows = [
            TextRow(self.tokenizer, stop_tokens, stop_strings, decode=not return_as_token_ids) for _ in prompts
        ]
        return Generation(
            self.model, ids, rows, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            generator=generator, step_fn=self.step_fn, fixed_cache_len=self.fixed_kv_cache_size,
            bucket_cache=self.step_fn is not None,
        )

    def generate(
        self,
        prompt: Union[str, Sequence[str]],
        sys_prompt: Optional[str] = None,
        max_new_tokens: int = 50,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: float = 1.0,
        return_as_token_ids: bool = False,
        stream: bool = False,
        stop: Union[str, Sequence[str], None] = None,
    ) -> Union[str, list[str], torch.Tensor, list[torch.Tensor], Iterator[str], Iterator[int]]:
        """Generates text for a prompt, or for a list of prompts as one batch.

        The prompt style is applied to each prompt; generation stops at the tokenizer's / style's stop tokens,
        at the first of the `stop` strings, or after `max_new_tokens`.

        Args:
            prompt: a string, or a non-empty list of strings (generated together, each stopping on its own).
            sys_prompt: a system prompt (None: the style's default, if any).
            max_new_tokens: at most this many new tokens (>= 1); clipped with a warning to fit the context.
            temperature: 0 is greedy; higher values sample more randomly (>= 0).
            top_k: sample among the k most likely tokens only (>= 1; 1 is greedy).
            top_p: sample among the most likely tokens whose probability mass reaches top_p, in (0, 1].
            return_as_token_ids: return the new token ids (a 1-D tensor per prompt) instead of text.
            stream: return an iterator of text pieces (of token ids with return_as_token_ids) as they are
                decoded; only for a single prompt.
            stop: a string or strings that end the text (it stops right before the first one); default: the
                prompt style's (most have none).

        Returns:
            The text (a list of texts for a list of prompts), the token ids, or an iterator (stream=True).
        """
        if stream and not isinstance(prompt, str):
            raise ValueError("stream=True takes a single prompt (a str), not a list")
        generation = self.generation(
            prompt, sys_prompt=sys_prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
            top_p=top_p, stop=stop, return_as_token_ids=return_as_token_ids,
        )
        if stream:
            return _stream_pieces(generation, return_as_token_ids)
        generation.run()
        if return_as_token_ids:
            out = [torch.tensor(ids, dtype=torch.long) for ids in generation.token_ids]
        else:
            out = generation.texts
        return out[0] if isinstance(prompt, str) else out

    def benchmark(self, num_iterations: int = 1, **generate_kwargs: Any) -> tuple[Any, dict[str, list[float]]]:
        """Runs `generate` `num_iterations` times and times it.

        Args:
            num_iterations: how many timed runs (>= 1).
            generate_kwargs: arguments for `generate` (prompt, max_new_tokens, stream, ...).

        Returns:
            The last run's output (a stream is consumed and returned as its joined text) and a dict of lists,
            one value per run: "Seconds total", "Seconds to first token", "Tokens generated" (new tokens
            sampled, over all prompts, each counted once), "Inference speed in tokens/sec" (tokens generated
            / seconds total), and on CUDA "Total GPU memory allocated in GB".
        """
        if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {num_iterations!r}")
        stream = generate_kwargs.pop("stream", False)
        if "prompt" not in generate_kwargs:
            raise ValueError("benchmark needs a prompt: llm.benchmark(prompt='...', ...)")
        if stream and not isinstance(generate_kwargs["prompt"], str):
            raise ValueError("stream=True takes a single prompt (a str), not a list")
        stats: dict[str, list[float]] = {
            "Seconds total": [], "Seconds to first token": [], "Tokens generated": [],
            "Inference speed in tokens/sec": [],
        }
        if self.device is not None and self.device.type == "cuda":
            stats["Total GPU memory allocated in GB"] = []
            torch.cuda.reset_peak_memory_stats(self.device)
        output: Any = None
        for _ in range(num_iterations):
            generation = self.generation(**generate_kwargs)
            as_ids = generate_kwargs.get("return_as_token_ids", False)
            if stream:
                pieces = list(_stream_pieces(generation, as_ids))
                output = pieces if as_ids else "".join(pieces)
            else:
                generation.run()
                result = (
                    [torch.tensor(ids, dtype=torch.long) for ids in generation.token_ids] if as_ids else generation.texts
                )
                output = result[0] if isinstance(generate_kwargs["prompt"], str) else result
            stats["Seconds total"].append(generation.seconds)
            stats["Seconds to first token"].append(generation.first_token_seconds)
            stats["Tokens generated"].append(generation.tokens_generated)
            stats["Inference speed in tokens/sec"].append(generation.tokens_per_second)
            if "Total GPU memory allocated in GB" in stats:
                stats["Total GPU memory allocated in GB"].append(torch.cuda.max_memory_allocated(self.device) / 1e9)
        return output, stats

    # ------------------------------------------------------------------------------------------------ saving

    def save(self, out_dir: Union[str, Path, None] = None, prompt_style: Optional[PromptStyle] = None) -> Path:
        """Writes a checkpoint folder: lit_model.pth, model_config.yaml, the tokenizer files and
        prompt_style.yaml (`LLM.load(out_dir)` loads it back).

        Args:
            out_dir: the folder (created if missing). Default: the folder the model was loaded from (its
                lit_model.pth is replaced atomically), as in LitGPT.
            prompt_style: the style to record (default: this LLM's).

        Returns:
            `out_dir` as a Path.
        """
        if out_dir is None:
            if self.checkpoint_dir is None:
                raise ValueError("save() needs out_dir for a model that was not loaded from a checkpoint folder")
            out_dir = self.checkpoint_dir
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise NotADirectoryError(f"{out_dir} exists and is not a directory")
        out_dir.mkdir(parents=True, exist_ok=True)
        save_atomic(_cpu_state_dict(self.model), out_dir / "lit_model.pth")
        self.config.save(out_dir)
        copy_side_files(self.tokenizer.checkpoint_dir, out_dir)
        for extra in ("chat_template.jinja", "chat_template.json"):
            src = self.tokenizer.checkpoint_dir / extra
            if src.is_file() and src.resolve() != (out_dir / extra).resolve():
                (out_dir / extra).write_bytes(src.read_bytes())
        save_prompt_style(prompt_style or self.prompt_style, out_dir)
        return out_dir

    def __repr__(self) -> str:
        return (
            f"LLM(model={self.config.name!r}, device={self.device}, precision={self.precision}, "
            f"prompt_style={self.prompt_style!r})"
        )


def _stream_pieces(generation: Generation, as_ids: bool) -> Iterator:
    for _, piece in generation:
        if as_ids:
            yield from piece
        else:
            yield piece


def _check_prompts(prompt: Union[str, Sequence[str]]) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, (list, tuple)):
        raise ValueError(f"prompt must be a str or a list of str, got {type(prompt).__name__}")
    if not prompt:
        raise ValueError("prompt must not be an empty list: pass at least one prompt")
    for i, p in enumerate(prompt):
        if not isinstance(p, str):
            raise ValueError(f"prompt[{i}] must be a str, got {type(p).__name__}")
    return list(prompt)


def _check_stop(stop: Union[str, Sequence[str], None], style: PromptStyle) -> list[str]:
    if stop is None:
        return list(style.stop_strings)
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise ValueError(f"stop must be a string or a list of strings, got {stop!r}")
    if any(s == "" for s in stop):
        raise ValueError("stop strings must not be empty")
    return list(stop)


def _cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict on the CPU; tensors shared in the model (tied embeddings) stay shared."""
    moved: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if key not in moved:
            t = tensor.detach().cpu()
            # a view into a larger buffer (weights packed for decoding) is saved alone, not with the buffer
            moved[key] = t.clone() if t.untyped_storage().nbytes() > t.nbytes else t
        out[name] = moved[key]
    return out


def _pretrained_dir(config: Config, access_token: Optional[str]) -> Path:
    """`checkpoints/<org>/<name>` for a registry config, downloaded and converted there if missing."""
    from litgpt.scripts.download import auto_download_checkpoint

    return auto_download_checkpoint(config.name, access_token=access_token)
