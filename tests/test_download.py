"""`litgpt download`: file selection, destination, conversion call, `list`, and one-line errors; all offline.

The Hub is replaced by `FakeHub`: `HfApi.list_repo_files` and `snapshot_download` (as imported by
`litgpt.scripts.download`) serve the files of an in-memory or on-disk repo and record every call.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path
from typing import Optional

import pytest
from huggingface_hub.utils import filter_repo_objects

import litgpt.scripts.download as download
from litgpt.scripts.download import download_from_hub

REPO = "EleutherAI/pythia-14m"  # in the registry


class FakeHub:
    """Stands in for the Hub: serves `files` ({path: bytes}) or a folder on disk, records the calls."""

    def __init__(self, files: Optional[dict[str, bytes]] = None, folder: Optional[Path] = None):
        if folder is not None:
            files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        self.files = dict(files or {})
        self.list_calls: list[tuple[str, Optional[str]]] = []
        self.snapshot_calls: list[dict] = []
        self.list_error: Optional[BaseException] = None
        self.snapshot_error: Optional[BaseException] = None

    def install(self, monkeypatch) -> "FakeHub":
        hub = self

        class FakeApi:
            def __init__(self, token=None, **kwargs):
                self.token = token

            def list_repo_files(self, repo_id, **kwargs):
                hub.list_calls.append((repo_id, self.token))
                if hub.list_error is not None:
                    raise hub.list_error
                return sorted(hub.files)

        def fake_snapshot_download(repo_id, *, local_dir, allow_patterns=None, token=None, **kwargs):
            hub.snapshot_calls.append(dict(repo_id=repo_id, local_dir=Path(local_dir), allow_patterns=allow_patterns, token=token))
            if hub.snapshot_error is not None:
                raise hub.snapshot_error
            for name in filter_repo_objects(sorted(hub.files), allow_patterns=allow_patterns):
                out = Path(local_dir) / name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(hub.files[name])
            return str(local_dir)

        monkeypatch.setattr(download, "HfApi", FakeApi)
        monkeypatch.setattr(download, "snapshot_download", fake_snapshot_download)
        return self

    @property
    def requested(self) -> list[list[str]]:
        return [list(c["allow_patterns"]) for c in self.snapshot_calls]


class NoHub:
    """Fails the test on any Hub call."""

    @staticmethod
    def install(monkeypatch) -> None:
        def boom(*args, **kwargs):
            raise AssertionError("the Hub was called")

        monkeypatch.setattr(download, "HfApi", boom)
        monkeypatch.setattr(download, "snapshot_download", boom)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No token, online mode, and no real converter unless a test installs one."""
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_ENABLE_HF_TRANSFER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(download.hub_constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(download, "_stored_token", lambda: False)


@pytest.fixture
def converter(monkeypatch):
    """Replaces `litgpt.scripts.convert_hf_checkpoint` with a recorder."""
    calls = []
    module = types.ModuleType("litgpt.scripts.convert_hf_checkpoint")

    def convert_hf_checkpoint(checkpoint_dir, *, model_name=None, dtype=None):
        calls.append(dict(checkpoint_dir=Path(checkpoint_dir), model_name=model_name, dtype=dtype))

    module.convert_hf_checkpoint = convert_hf_checkpoint
    monkeypatch.setitem(sys.modules, "litgpt.scripts.convert_hf_checkpoint", module)
    import litgpt.scripts

    monkeypatch.setattr(litgpt.scripts, "convert_hf_checkpoint", module, raising=False)
    return calls


def _repo(*names: str) -> dict[str, bytes]:
    return {n: f"content of {n}".encode() for n in names}


PYTHIA_FILES = _repo(
    ".gitattributes", "README.md", "config.json", "generation_config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "model.safetensors", "pytorch_model.bin",
    "training_args.bin", "onnx/model.safetensors",
)


# ---------------------------------------------------------------------------------------------------------
# list


def test_list_prints_the_registry_repo_ids_sorted_without_touching_the_hub(monkeypatch, capsys):
    NoHub.install(monkeypatch)
    assert download_from_hub("list") is None
    lines = capsys.readouterr().out.splitlines()
    assert REPO in lines and "meta-llama/Llama-3.2-1B" in lines
    assert lines == sorted(lines) and len(lines) == len(set(lines))
    from litgpt.config import name_to_config

    expected = {f"{e['hf_config']['org']}/{e['hf_config']['name']}" for e in name_to_config.values() if e.get("hf_config")}
    assert set(lines) == expected


# ---------------------------------------------------------------------------------------------------------
# which files, where


def test_safetensors_preferred_config_and_tokenizer_taken_destination_and_conversion(tmp_path, monkeypatch, converter):
    hub = FakeHub(PYTHIA_FILES).install(monkeypatch)
    out = download_from_hub(REPO, checkpoint_dir=tmp_path / "ckpts")
    dest = tmp_path / "ckpts" / "EleutherAI" / "pythia-14m"
    assert out == dest
    assert hub.list_calls == [(REPO, None)]
    assert hub.requested == [
        ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"],
        ["model.safetensors"],
    ]
    assert all(c["local_dir"] == dest and c["repo_id"] == REPO for c in hub.snapshot_calls)
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == sorted(hub.requested[0] + hub.requested[1])  # no .bin, no README, no onnx/ copy
    assert (dest / "model.safetensors").read_bytes() == PYTHIA_FILES["model.safetensors"]
    assert converter == [dict(checkpoint_dir=dest, model_name=None, dtype=None)]


def test_sharded_safetensors_follow_the_index_and_skip_other_safetensors(tmp_path, monkeypatch, converter):
    index = {"metadata": {}, "weight_map": {
        "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors",
        "c.weight": "model-00002-of-00002.safetensors",
    }}
    files = _repo("config.json", "tokenizer.model", "tokenizer_config.json", "model-00001-of-00002.safetensors",
                  "model-00002-of-00002.safetensors", "consolidated.safetensors", "original/consolidated.00.pth")
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    hub = FakeHub(files).install(monkeypatch)
    dest = download_from_hub("mistralai/Tiny-v0.3", checkpoint_dir=tmp_path)
    assert hub.requested == [
        ["config.json", "tokenizer.model", "tokenizer_config.json", "model.safetensors.index.json"],
        ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
    ]
    assert not (dest / "consolidated.safetensors").exists()
    assert converter[0]["checkpoint_dir"] == tmp_path / "mistralai" / "Tiny-v0.3"


def test_bin_weights_only_when_the_repo_has_no_safetensors(tmp_path, monkeypatch, converter):
    hub = FakeHub(_repo("config.json", "vocab.json", "merges.txt", "pytorch_model.bin", "training_args.bin",
                        "rng_state.bin")).install(monkeypatch)
    download_from_hub("someone/old-model", checkpoint_dir=tmp_path)
    assert hub.requested == [["config.json", "vocab.json", "merges.txt"], ["pytorch_model.bin"]]

    index = {"weight_map": {"x": "pytorch_model-00001-of-00002.bin", "y": "pytorch_model-00002-of-00002.bin"}}
    files = _repo("config.json", "tokenizer.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin")
    files["pytorch_model.bin.index.json"] = json.dumps(index).encode()
    hub = FakeHub(files).install(monkeypatch)
    download_from_hub("someone/sharded-bin", checkpoint_dir=tmp_path)
    assert hub.requested == [
        ["config.json", "tokenizer.json", "pytorch_model.bin.index.json"],
        ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"],
    ]


def test_tokenizer_only_takes_no_weights_and_does_not_convert(tmp_path, monkeypatch, converter, capsys):
    hub = FakeHub(PYTHIA_FILES).install(monkeypatch)
    dest = download_from_hub("someone/unlisted", tokenizer_only=True, checkpoint_dir=tmp_path)
    assert hub.requested == [
        ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    ]
    assert not list(dest.glob("*.safetensors")) and not list(dest.glob("*.bin"))
    assert converter == []
    assert "not in the litgpt registry" not in capsys.readouterr().err


def test_conversion_arguments_and_opt_out(tmp_path, monkeypatch, converter):
    FakeHub(PYTHIA_FILES).install(monkeypatch)
    dest = download_from_hub(
        "someone/pythia-14m-finetune", dtype="bfloat16", model_name="pythia-14m", checkpoint_dir=tmp_path
    )
    assert converter == [dict(checkpoint_dir=dest, model_name="pythia-14m", dtype="bfloat16")]
    download_from_hub(REPO, convert_checkpoint=False, checkpoint_dir=tmp_path)
    assert len(converter) == 1
    assert (tmp_path / REPO / "model.safetensors").is_file()


def test_access_token_reaches_every_hub_call(tmp_path, monkeypatch, converter):
    hub = FakeHub(PYTHIA_FILES).install(monkeypatch)
    download_from_hub(REPO, access_token="hf_abc", checkpoint_dir=tmp_path)
    assert hub.list_calls == [(REPO, "hf_abc")]
    assert [c["token"] for c in hub.snapshot_calls] == ["hf_abc", "hf_abc"]
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    download_from_hub(REPO, checkpoint_dir=tmp_path)
    assert hub.list_calls[-1] == (REPO, "hf_env")


def test_repo_outside_the_registry_is_downloaded_with_a_note(tmp_path, monkeypatch, converter, capsys):
    FakeHub(PYTHIA_FILES).install(monkeypatch)
    download_from_hub("someone/new-arch", checkpoint_dir=tmp_path)
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "not in the litgpt registry" in line]
    assert len(notes) == 1 and "someone/new-arch" in notes[0] and "--model_name" in notes[0]
    assert converter[-1]["checkpoint_dir"] == tmp_path / "someone" / "new-arch"

    download_from_hub("someone/new-arch", model_name="pythia-14m", checkpoint_dir=tmp_path)
    download_from_hub("eleutherai/PYTHIA-14m", checkpoint_dir=tmp_path)  # the registry check ignores case
    assert "not in the litgpt registry" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# checks made before any Hub call


@pytest.mark.parametrize(
    "repo_id", ["pythia-14m", "EleutherAI/pythia-14m/extra", "", "/pythia", "org/", "org/-bad", "org/bad.",
                "org/na..me", "org/x--y", "org/with space", "org/repo.git"],
)
def test_invalid_repo_id_is_rejected_before_any_hub_call(repo_id, tmp_path, monkeypatch):
    NoHub.install(monkeypatch)
    with pytest.raises(ValueError, match=r"invalid repo_id .*'org/name'") as exc:
        download_from_hub(repo_id, checkpoint_dir=tmp_path)
    assert "\n" not in str(exc.value)
    assert not any(tmp_path.iterdir())


def test_bare_model_name_suggests_the_registry_repo(monkeypatch, tmp_path):
    NoHub.install(monkeypatch)
    with pytest.raises(ValueError, match=r"invalid repo_id 'pythia-14m'.*did you mean EleutherAI/pythia-14m\b"):
        download_from_hub("pythia-14m", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"did you mean meta-llama/Llama-3.2-1B\b"):
        download_from_hub("llama-3.2-1b", checkpoint_dir=tmp_path)


def test_local_folder_given_as_repo_id_points_to_convert_to_litgpt(tmp_path, monkeypatch):
    NoHub.install(monkeypatch)
    folder = tmp_path / "a" / "b" / "model"
    folder.mkdir(parents=True)
    with pytest.raises(ValueError, match="convert_to_litgpt"):
        download_from_hub(str(folder), checkpoint_dir=tmp_path / "out")


def test_bad_dtype_and_model_name_fail_before_any_hub_call(tmp_path, monkeypatch):
    NoHub.install(monkeypatch)
    with pytest.raises(ValueError, match="unknown dtype 'fp12'"):
        download_from_hub(REPO, dtype="fp12", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="pythia-14m"):  # the error suggests the close registry name
        download_from_hub(REPO, model_name="pythia-14", checkpoint_dir=tmp_path)
    assert not (tmp_path / "EleutherAI").exists()


def test_repo_without_weights_or_tokenizer_or_config(tmp_path, monkeypatch, converter):
    hub = FakeHub(_repo("config.json", "tokenizer.json", "README.md", "original/consolidated.00.pth")).install(monkeypatch)
    with pytest.raises(ValueError, match=r"no weights litgpt can read \(no \*.safetensors or \*.bin"):
        download_from_hub("someone/pth-only", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="no tokenizer files"):
        FakeHub(_repo("config.json", "model.safetensors")).install(monkeypatch)
        download_from_hub("someone/no-tok", tokenizer_only=True, checkpoint_dir=tmp_path)
    hub = FakeHub(_repo("tokenizer.json", "model.safetensors")).install(monkeypatch)
    with pytest.raises(ValueError, match="no config.json and is not in the registry.*--model_name"):
        download_from_hub("someone/no-config", checkpoint_dir=tmp_path)
    assert hub.snapshot_calls == []  # refused before downloading anything
    download_from_hub("someone/no-config", model_name="pythia-14m", checkpoint_dir=tmp_path)  # fine with a name
    assert converter[-1]["model_name"] == "pythia-14m"


def test_index_naming_missing_shards_is_an_error(tmp_path, monkeypatch, converter):
    files = _repo("config.json", "tokenizer.json", "model-00001-of-00002.safetensors")
    files["model.safetensors.index.json"] = json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                       "b": "model-00002-of-00002.safetensors"}}).encode()
    FakeHub(files).install(monkeypatch)
    with pytest.raises(ValueError, match="names files the repo does not have: model-00002-of-00002.safetensors"):
        download_from_hub("someone/broken", checkpoint_dir=tmp_path)
    assert converter == []


# ---------------------------------------------------------------------------------------------------------
# Hub errors -> one-line messages


def _hub_error(cls, status: int = 404, message: str = "Hub said no\nwith a long second line"):
    """An instance of a huggingface_hub HTTP error, whatever HTTP client this huggingface_hub uses."""
    try:
        import httpx2 as client

        response = client.Response(status, request=client.Request("GET", "https://huggingface.co/api/x"))
        return cls(message, response=response)
    except Exception:
        err = cls.__new__(cls)
        Exception.__init__(err, message)
        err.response = types.SimpleNamespace(status_code=status)
        return err


def _assert_one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    assert exc.__cause__ is None, "the hub's traceback should not be chained"
    assert exc.__context__ is None or exc.__suppress_context__, "the hub's traceback should not be chained"
    return text


@pytest.mark.parametrize("stage", ["list", "snapshot"])
def test_gated_repo_without_and_with_a_token(stage, tmp_path, monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    hub = FakeHub(PYTHIA_FILES).install(monkeypatch)
    setattr(hub, f"{stage}_error", _hub_error(GatedRepoError, 403))
    with pytest.raises(PermissionError) as exc:
        download_from_hub("meta-llama/Llama-3.2-1B", checkpoint_dir=tmp_path)
    text = _assert_one_line(exc.value)
    assert "gated" in text and "--access_token" in text and "HF_TOKEN" in text
    assert "https://huggingface.co/meta-llama/Llama-3.2-1B" in text

    with pytest.raises(PermissionError) as exc:
        download_from_hub("meta-llama/Llama-3.2-1B", access_token="hf_wrong", checkpoint_dir=tmp_path)
    text = _assert_one_line(exc.value)
    assert "has no access" in text and "accept the licence" in text


def test_repository_not_found_names_the_repo_and_suggests_registry_ids(tmp_path, monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    hub = FakeHub().install(monkeypatch)
    hub.list_error = _hub_error(RepositoryNotFoundError, 404)
    with pytest.raises(ValueError) as exc:
        download_from_hub("EleutherAI/pythia-14", checkpoint_dir=tmp_path)
    text = _assert_one_line(exc.value)
    assert "EleutherAI/pythia-14 was not found" in text and "did you mean EleutherAI/pythia-14m" in text
    assert hub.snapshot_calls == []

    with pytest.raises(ValueError, match="some-org/pythia-14m was not found.*did you mean EleutherAI/pythia-14m"):
        download_from_hub("some-org/pythia-14m", checkpoint_dir=tmp_path)  # same model name, other org
    with pytest.raises(ValueError, match="was not found.*litgpt download list") as exc:
        download_from_hub("nobody/zzzzzzzz", checkpoint_dir=tmp_path)


def test_http_401_and_server_errors(tmp_path, monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError

    hub = FakeHub().install(monkeypatch)
    hub.list_error = _hub_error(HfHubHTTPError, 401)
    with pytest.raises(PermissionError, match=r"refused access to .*HTTP 401.*--access_token") as exc:
        download_from_hub(REPO, checkpoint_dir=tmp_path)
    _assert_one_line(exc.value)
    hub.list_error = _hub_error(HfHubHTTPError, 503)
    with pytest.raises(ConnectionError, match=r"HTTP 503.*Hub said no; retry later") as exc:
        download_from_hub(REPO, checkpoint_dir=tmp_path)
    _assert_one_line(exc.value)


def _network_errors():
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    errors = [
        ConnectionError("Max retries exceeded\nwith url"),
        TimeoutError("timed out"),
        LocalEntryNotFoundError("Cannot find the requested files in the disk cache"),
        OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled."),
    ]
    try:
        import httpx2

        errors.append(httpx2.ConnectError("[Errno -2] Name or service not known"))
    except ImportError:
        pass

    class ConnectTimeout(Exception):  # a client's own exception type, recognised by name
        pass

    errors.append(ConnectTimeout("connect timeout"))
    return errors


@pytest.mark.parametrize("error", _network_errors(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("stage", ["list", "snapshot"])
def test_network_failures_say_the_hub_is_unreachable_and_how_to_go_local(error, stage, tmp_path, monkeypatch):
    hub = FakeHub(PYTHIA_FILES).install(monkeypatch)
    setattr(hub, f"{stage}_error", error)
    with pytest.raises(ConnectionError) as exc:
        download_from_hub(REPO, checkpoint_dir=tmp_path)
    text = _assert_one_line(exc.value)
    assert "Hugging Face Hub is unreachable" in text and REPO in text and "litgpt convert_to_litgpt" in text


def test_other_errors_pass_through_unchanged(tmp_path, monkeypatch):
    hub = FakeHub(PYTHIA_FILES).install(monkeypatch)
    hub.snapshot_error = KeyError("not a hub problem")
    with pytest.raises(KeyError, match="not a hub problem"):
        download_from_hub(REPO, checkpoint_dir=tmp_path)


def test_hf_hub_offline_fails_without_a_hub_call_or_uses_the_files_already_there(tmp_path, monkeypatch, converter, capsys):
    NoHub.install(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError) as exc:
        download_from_hub(REPO, checkpoint_dir=tmp_path)
    text = _assert_one_line(exc.value)
    assert "HF_HUB_OFFLINE" in text and "litgpt convert_to_litgpt DIR" in text

    dest = tmp_path / REPO
    dest.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (dest / name).write_text("x")
    assert download_from_hub(REPO, checkpoint_dir=tmp_path) == dest
    assert converter == [dict(checkpoint_dir=dest, model_name=None, dtype=None)]
    assert f"using the files already in {dest}" in capsys.readouterr().err


def test_hf_transfer_is_switched_on_only_for_old_hubs_that_use_it(monkeypatch):
    fake_constants = types.SimpleNamespace(HF_HUB_ENABLE_HF_TRANSFER=False)
    monkeypatch.setattr(download, "hub_constants", fake_constants)
    monkeypatch.setattr(download.importlib.util, "find_spec", lambda name: None)
    download._enable_fast_transfer()
    assert fake_constants.HF_HUB_ENABLE_HF_TRANSFER is False  # not installed: left alone
    monkeypatch.setattr(download.importlib.util, "find_spec", lambda name: object() if name == "hf_transfer" else None)
    monkeypatch.setenv("HF_HUB_ENABLE_HF_TRANSFER", "0")
    download._enable_fast_transfer()
    assert fake_constants.HF_HUB_ENABLE_HF_TRANSFER is False  # the user switched it off
    monkeypatch.delenv("HF_HUB_ENABLE_HF_TRANSFER")
    download._enable_fast_transfer()
    assert fake_constants.HF_HUB_ENABLE_HF_TRANSFER is True
    modern = types.SimpleNamespace()
    monkeypatch.setattr(download, "hub_constants", modern)
    download._enable_fast_transfer()  # huggingface_hub >= 1.0 has no such switch (it uses hf_xet)
    assert not hasattr(modern, "HF_HUB_ENABLE_HF_TRANSFER")


# ---------------------------------------------------------------------------------------------------------
# a real Hugging Face snapshot on disk


def _tiny_neox_snapshot(folder: Path) -> Path:
    """A real 2-layer GPT-NeoX repo as transformers writes it, plus a tokenizer and extra Hub clutter."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from tests._tokenizers import make_hf_tokenizer

    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False,
    )
    GPTNeoXForCausalLM(config).save_pretrained(folder)
    make_hf_tokenizer(folder, vocab_size=256)
    shutil.copy(folder / "model.safetensors", folder / "pytorch_model.bin")  # must not be fetched
    (folder / "README.md").write_text("# tiny\n")
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.safetensors").write_bytes(b"\0")
    return folder


def test_real_snapshot_lands_in_place_byte_for_byte(tmp_path, monkeypatch):
    source = _tiny_neox_snapshot(tmp_path / "hub")
    hub = FakeHub(folder=source).install(monkeypatch)
    dest = download_from_hub("tiny-org/tiny-neox", convert_checkpoint=False, checkpoint_dir=tmp_path / "checkpoints")
    assert dest == tmp_path / "checkpoints" / "tiny-org" / "tiny-neox"
    got = sorted(p.name for p in dest.iterdir())
    assert got == sorted(["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                          "tokenizer_config.json"])
    for name in got:
        assert (dest / name).read_bytes() == (source / name).read_bytes()
    assert len(hub.snapshot_calls) == 2


def test_real_snapshot_downloads_and_converts_end_to_end(tmp_path, monkeypatch):
    """Download + the real converter: the checkpoint matches transformers' logits."""
    import litgpt.scripts.convert_hf_checkpoint  # noqa: F401 (a test dependency: missing means failing)
    import torch
    from transformers import GPTNeoXForCausalLM

    from litgpt import GPT, Config
    from litgpt.checkpoint import load_checkpoint

    source = _tiny_neox_snapshot(tmp_path / "hub")
    FakeHub(folder=source).install(monkeypatch)
    dest = download_from_hub("tiny-org/tiny-neox", checkpoint_dir=tmp_path / "checkpoints")
    assert (dest / "lit_model.pth").is_file() and (dest / "model_config.yaml").is_file()

    config = Config.from_file(dest / "model_config.yaml")
    model = GPT(config)
    load_checkpoint(model, dest / "lit_model.pth")
    reference = GPTNeoXForCausalLM.from_pretrained(source).eval()
    idx = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(idx)[..., :256]
        theirs = reference(idx).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# the command line


def test_cli_flags_reach_the_function(tmp_path, monkeypatch, converter, capsys):
    import litgpt.__main__ as cli
    hub = FakeHub(PYTHIA_FILES).install(monkeypatch)
    rc = cli.main(["download", REPO, "--tokenizer_only", "true", "--checkpoint_dir", str(tmp_path),
                   "--access_token", "hf_cli"])
    assert rc in (0, None)
    assert hub.list_calls == [(REPO, "hf_cli")] and len(hub.snapshot_calls) == 1
    assert (tmp_path / REPO / "tokenizer.json").is_file() and converter == []
    capsys.readouterr()
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    with pytest.raises(SystemExit):
        cli.main(["download", "--help"])
    assert "hf_secret_value" not in capsys.readouterr().out  # the token never shows in --help
