"""LitGPT's names in `litgpt.deploy.serve`: `BaseLitAPI`, `SimpleLitAPI`, `StreamLitAPI`, `OpenAISpecLitAPI` and
`run_server`, with LitGPT 0.5.13's argument names and defaults; one LitServe server on loopback serves the three
API classes, one request each."""

import inspect
import json
import subprocess
import sys
import time

import pytest
import requests

from litgpt.deploy import serve
from tests._gen_helpers import make_checkpoint, tiny_config

LITGPT_API_ARGS = ["checkpoint_dir", "quantize", "precision", "temperature", "top_k", "top_p", "max_new_tokens",
                   "devices", "api_path", "generate_strategy"]
LITGPT_RUN_SERVER = {
    "checkpoint_dir": inspect.Parameter.empty, "quantize": None, "precision": None, "temperature": 0.8,
    "top_k": 50, "top_p": 1.0, "max_new_tokens": 50, "devices": 1, "accelerator": "auto", "port": 8000,
    "stream": False, "openai_spec": False, "access_token": None, "api_path": "/predict", "timeout": 30,
    "generate_strategy": None,
}

SERVER = """
import sys
import litserve as ls
from litgpt.deploy.serve import OpenAISpecLitAPI, SimpleLitAPI, StreamLitAPI
ckpt, port = sys.argv[1], int(sys.argv[2])
apis = [SimpleLitAPI(ckpt, precision="32-true", temperature=0, max_new_tokens=6, api_path="/simple"),
        StreamLitAPI(ckpt, precision="32-true", temperature=0, max_new_tokens=6, api_path="/stream"),
        OpenAISpecLitAPI(ckpt, precision="32-true", max_new_tokens=6)]
ls.LitServer(apis, accelerator="cpu", devices=1).run(host="127.0.0.1", port=port, generate_client_file=False)
"""


def test_signatures_are_litgpts():
    for cls in (serve.BaseLitAPI, serve.SimpleLitAPI, serve.StreamLitAPI, serve.OpenAISpecLitAPI):
        params = inspect.signature(cls.__init__).parameters
        assert list(params)[1:] == LITGPT_API_ARGS
        assert params["temperature"].default == 0.8 and params["top_k"].default == 50
    params = inspect.signature(serve.run_server).parameters
    assert list(params)[: len(LITGPT_RUN_SERVER)] == list(LITGPT_RUN_SERVER)
    assert {k: params[k].default for k in LITGPT_RUN_SERVER} == LITGPT_RUN_SERVER
    with pytest.raises(ValueError, match="generate_strategy='sequential' is not supported"):
        serve.SimpleLitAPI("ckpt", generate_strategy="sequential")


def test_each_api_class_serves_one_request(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt", tiny_config(block_size=128))
    port = serve._free_port()
    log = open(tmp_path / "server.log", "wb")
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(ckpt), str(port)], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        simple = requests.post(f"{url}/simple", json={"prompt": "Hello"}, timeout=60)
        assert simple.status_code == 200 and isinstance(simple.json()["output"], str)
        streamed = requests.post(f"{url}/stream", json={"prompt": "Hello"}, timeout=60)
        pieces = [json.loads(line)["output"] for line in streamed.iter_lines() if line]
        assert "".join(pieces) == simple.json()["output"]  # greedy both: the same text, streamed
        chat = requests.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "temperature": 0, "max_tokens": 4})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["role"] == "assistant"
        assert requests.post(f"{url}/simple", json={"text": "no prompt"}, timeout=60).status_code == 400
    finally:
        process.send_signal(2)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            import os, signal
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
