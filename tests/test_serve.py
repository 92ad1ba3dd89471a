"""`litgpt serve` end to end: real servers on loopback (started once per module), the official `openai` client,
the plain API with `requests`, every bad input, the API key, and 32 concurrent clients."""

import http.client
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

import litgpt.__main__ as cli
from litgpt.deploy.serve import BackgroundServer
from litgpt.prompts import ChatTemplate
from litgpt.tokenizer import Tokenizer
from tests._gen_helpers import make_checkpoint, tiny_config, write_tokenizer_config

KEY = "test-key-123"
TEMPLATE = (
    "{% for m in messages %}{{ '<' + m['role'] + '>' + m['content'] + '</' + m['role'] + '>' }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
MAX_REQUEST = 4096


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    directory = make_checkpoint(tmp_path_factory.mktemp("ckpt"), tiny_config(block_size=128))
    write_tokenizer_config(directory, chat_template=TEMPLATE)
    return directory


@pytest.fixture(scope="module")
def tokenizer(ckpt):
    return Tokenizer(ckpt)


def _server(ckpt, tmp_path_factory, **flags):
    log = tmp_path_factory.mktemp("log") / "server.log"
    return BackgroundServer(ckpt, log_path=log, precision="32-true", accelerator="cpu", **flags)


@pytest.fixture(scope="module")
def openai_server(ckpt, tmp_path_factory):
    with _server(ckpt, tmp_path_factory, openai_spec=True, api_key=KEY, max_request_size=MAX_REQUEST,
                 max_new_tokens=8) as server:
        yield server


@pytest.fixture(scope="module")
def plain_server(ckpt, tmp_path_factory):
    with _server(ckpt, tmp_path_factory, stream=True, max_batch_size=8, max_new_tokens=12) as server:
        yield server


@pytest.fixture(scope="module")
def client(openai_server):
    return openai.OpenAI(base_url=f"{openai_server.url}/v1", api_key=KEY, max_retries=0, timeout=60)


def _post(server, path, body, key=KEY, **kwargs):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    return requests.post(f"{server.url}{path}", data=data, headers=headers, timeout=60, **kwargs)


# ------------------------------------------------------------------------------------------------ OpenAI API


def test_models_lists_the_checkpoint(client):
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_chat_completion_uses_the_chat_template(client, tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    again = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == again.choices[0].message.content
    assert choice.finish_reason in ("stop", "length")
    rendered = ChatTemplate(TEMPLATE).apply_conversation(messages)
    assert rendered == "<system>Be brief.</system><user>What is 2+2?</user><assistant>"
    assert reply.usage.prompt_tokens == len(tokenizer.encode(rendered))
    assert 1 <= reply.usage.completion_tokens <= 6
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_streaming_matches_the_whole_answer(client):
    messages = [{"role": "user", "content": "Tell me a story"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=20, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_n_seed_stop_and_token_prompts(client, tokenizer):
    greedy = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=16, temperature=0)
    text = greedy.choices[0].text
    assert greedy.choices[0].finish_reason == "length" and greedy.usage.completion_tokens == 16
    # the same prompt as token ids
    ids = tokenizer.encode("Once upon a time").tolist()
    assert client.completions.create(model="tiny", prompt=ids, max_tokens=16, temperature=0).choices[0].text == text
    # a stop string cuts the text right before it
    stop = next(c for c in text[2:] if c.isprintable() and c != "\ufffd")
    cut = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    # n choices; a seed makes sampling reproducible (choice i uses seed + i)
    sampled = dict(model="tiny", prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=5)
    three = client.completions.create(n=3, **sampled)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert client.completions.create(**sampled).choices[0].text == three.choices[0].text
    assert len({c.text for c in three.choices}) > 1
    assert three.usage.completion_tokens == 36


def test_completion_streaming(client):
    whole = client.completions.create(model="tiny", prompt="Hello", max_tokens=10, temperature=0)
    chunks = list(client.completions.create(model="tiny", prompt="Hello", max_tokens=10, temperature=0,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_api_key_is_required(openai_server):
    for key in (None, "wrong-key"):
        r = _post(openai_server, "/v1/completions", {"prompt": "hi"}, key=key)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert requests.get(f"{openai_server.url}/v1/models", timeout=10).status_code == 401
    assert requests.get(f"{openai_server.url}/health", timeout=10).status_code == 200  # probes need no key
    bad = openai.OpenAI(base_url=f"{openai_server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="tiny", prompt="hi")


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
BAD_OPENAI = [
    ("/v1/chat/completions", b'{"messages": [', 400, "not valid JSON"),
    ("/v1/chat/completions", b"[1, 2]", 400, "must be a JSON object"),
    ("/v1/chat/completions", {"model": "tiny"}, 400, "messages: Field required"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages: List should have at least 1 item"),
    ("/v1/chat/completions", {"messages": "hi"}, 400, "messages: Input should be a valid list"),
    ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 0}, 400, "max_tokens: Input should be greater than or equal to 1"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": "10"}, 400, "max_tokens: Input should be a valid integer"),
    ("/v1/chat/completions", {**CHAT, "temperature": -0.5}, 400, "temperature: Input should be greater than"),
    ("/v1/chat/completions", {**CHAT, "temperature": "hot"}, 400, "temperature: Input should be a valid number"),
    ("/v1/chat/completions", {**CHAT, "top_p": 0}, 400, "top_p: Input should be greater than 0"),
    ("/v1/chat/completions", {**CHAT, "top_p": 1.5}, 400, "top_p: Input should be less than or equal to 1"),
    ("/v1/chat/completions", {**CHAT, "n": True}, 400, "n: Input should be a valid integer"),
    ("/v1/chat/completions", {**CHAT, "stop": 5}, 400, "stop: must be a string or a list of strings"),
    ("/v1/chat/completions", {**CHAT, "model": "gpt-4o"}, 404, "model 'gpt-4o' is not served here"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "x" * 400}]}, 400,
     "context holds 128"),
    ("/v1/completions", {"model": "tiny"}, 400, "prompt: Field required"),
    ("/v1/completions", {"prompt": []}, 400, "prompt: must be a string"),
    ("/v1/completions", {"prompt": [1, 999]}, 400, "token id 999 is outside the vocabulary"),
    ("/v1/completions", {"prompt": "hi", "logprobs": 2}, 400, "logprobs are not supported"),
    ("/v1/completions", {"prompt": "y" * 300}, 400, "context holds 128"),
    ("/v1/completions", {"prompt": "hi", "padding": "z" * MAX_REQUEST}, 413, "larger than the limit"),
]


@pytest.mark.parametrize("path, body, status, message", BAD_OPENAI, ids=[m for *_, m in BAD_OPENAI])
def test_bad_openai_requests_get_a_json_error(openai_server, path, body, status, message):
    r = _post(openai_server, path, body)
    assert r.status_code == status
    error = r.json()["error"]
    assert message in error["message"] and "\n" not in error["message"]


def test_oversize_bodies_are_refused_before_they_are_read(openai_server, client):
    # a Content-Length far over the limit is refused without waiting for the body
    host, port = openai_server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/v1/completions")
    for name, value in (("Authorization", f"Bearer {KEY}"), ("Content-Type", "application/json"),
                        ("Content-Length", str(10**9))):
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "larger than the limit" in json.loads(response.read())["error"]["message"]
    conn.close()
    # a chunked body (no Content-Length) is cut off once it passes the limit
    chunks = (b'{"prompt": "' + b"x" * 1000 for _ in range(6))
    r = requests.post(f"{openai_server.url}/v1/completions", data=chunks, timeout=10,
                      headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 413
    # and the server goes on serving
    assert client.completions.create(model="tiny", prompt="ok", max_tokens=2).usage.completion_tokens == 2


# ------------------------------------------------------------------------------------------------ plain API


def test_predict_streams_by_default_and_answers_json_on_request(plain_server):
    body = {"prompt": "What do llamas eat?", "max_new_tokens": 24, "temperature": 0}
    whole = _post(plain_server, "/predict", {**body, "stream": False}, key=None)
    assert whole.status_code == 200
    out = whole.json()
    assert isinstance(out["output"], str) and out["usage"]["completion_tokens"] <= 24
    streamed = _post(plain_server, "/predict", body, key=None, stream=True)
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in streamed.iter_lines() if line]
    assert "".join(line["output"] for line in lines) == out["output"]
    assert lines[-1]["finish_reason"] == out["finish_reason"]


def test_a_client_that_leaves_midway_does_not_disturb_the_server(plain_server):
    body = {"prompt": "Tell me everything", "max_new_tokens": 100, "temperature": 0}
    with _post(plain_server, "/predict", body, key=None, stream=True) as streamed:
        next(streamed.iter_lines())  # read one line, then hang up (the server cancels the request)
    out = _post(plain_server, "/predict", {**body, "max_new_tokens": 5, "stream": False}, key=None)
    assert out.status_code == 200 and out.json()["usage"]["completion_tokens"] == 5


def test_predict_uses_the_server_defaults(plain_server):
    out = _post(plain_server, "/predict", {"prompt": "Hi", "temperature": 0, "stream": False}, key=None).json()
    assert out["usage"]["completion_tokens"] == 12 or out["finish_reason"] == "stop"  # --max_new_tokens 12


BAD_PLAIN = [
    (b"not json", "not valid JSON"),
    ({"max_new_tokens": 5}, "prompt: Field required"),
    ({"prompt": 5}, "prompt: Input should be a valid string"),
    ({"prompt": "hi", "max_tokens": 5}, "max_tokens: unknown field"),
    ({"prompt": "hi", "max_new_tokens": 0}, "max_new_tokens: Input should be greater than or equal to 1"),
    ({"prompt": "hi", "top_k": 0}, "top_k: Input should be greater than or equal to 1"),
    ({"prompt": "hi", "temperature": -1}, "temperature: Input should be greater than or equal to 0"),
    ({"prompt": "hi", "top_p": 2}, "top_p: Input should be less than or equal to 1"),
    ({"prompt": "z" * 500}, "context holds 128"),
]


@pytest.mark.parametrize("body, message", BAD_PLAIN, ids=[m for _, m in BAD_PLAIN])
def test_bad_plain_requests_get_a_json_error(plain_server, body, message):
    r = _post(plain_server, "/predict", body, key=None)
    assert r.status_code == 400 and message in r.json()["error"]["message"]


def test_32_concurrent_clients_get_their_single_request_answers(plain_server):
    prompts = [f"Question {i}: " + "why " * (i % 7) for i in range(32)]

    def ask(prompt):
        body = {"prompt": prompt, "max_new_tokens": 10 + len(prompt) % 9, "temperature": 0, "stream": False}
        r = _post(plain_server, "/predict", body, key=None)
        assert r.status_code == 200, r.text
        return r.json()["output"]

    alone = [ask(p) for p in prompts]
    with ThreadPoolExecutor(32) as pool:
        together = list(pool.map(ask, prompts))
    assert together == alone
    assert len(set(alone)) > 1


# ------------------------------------------------------------------------------------------------ the verb


def test_bad_flags_fail_before_loading(ckpt, capsys):
    cases = [
        (["--port", "80"], "port must be an integer in [1024, 65535]"),
        (["--host", "localhost"], "host must be one of"),
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--max_batch_size", "0"], "max_batch_size must be an integer >= 1"),
        (["--max_seq_length", "4096"], "max_seq_length must be an integer in [2, 128]"),
        (["--api_path", "predict"], "api_path must start with '/'"),
        (["--quantize", "int3"], "unknown quantization mode"),
        (["--precision", "64-true"], "precision must be one of"),
    ]
    for flags, message in cases:
        assert cli.main(["serve", str(ckpt), *flags]) == 1
        assert message in capsys.readouterr().err
    assert cli.main(["serve", str(ckpt.parent / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_port_in_use_is_reported(ckpt, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["serve", str(ckpt), "--port", str(port)]) == 1
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
