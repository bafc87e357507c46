"""The api backend's client behaviour through the real ``openai`` package against a small local HTTP server that
answers like an OpenAI-compatible endpoint and misbehaves on purpose: rate limits that pass (retried with
backoff), a row that keeps failing (reported by dataset_index, retried by the rerun), a bad key (stops at once),
reasoning fields, n > 1; and the eval set's option writer, which sends through the same client. The live vLLM
server is in test_api_backend.py."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medvlthinker.cli import UserError
from medvlthinker.data import to_dataset
from medvlthinker.demo import synthetic
from medvlthinker.inference.api_backend import ApiBackend, ApiRowsFailed, reply_text
from medvlthinker.inference.records import read_run
from medvlthinker.inference.run_config import RunConfig
from medvlthinker.inference.runner import run

SECRET = "sk-test-client-71c2"


class Endpoint:
    """``POST /v1/chat/completions``: 429 while a row's question names a rate limit, 401 for a wrong key."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.calls: dict[str, int] = {}
        self.limited: set[str] = set()  # questions answered 429 forever
        self.flaky = 2  # 429s before a "flaky" question is answered
        self.mode: str | None = None  # a misbehaving endpoint: other_model, one_choice, no_choices, not_json, trickle
        self.content: str | None = None  # the reply's text (default: an answer letter)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.bodies.append(body)
                content = body["messages"][-1]["content"]  # the backend's parts, or the option writer's text
                text = content if isinstance(content, str) else content[-1]["text"]
                question = text.rsplit("Question: ", 1)[1].split("\n", 1)[0]
                count = endpoint.calls[question] = endpoint.calls.get(question, 0) + 1
                if self.headers["Authorization"] != f"Bearer {SECRET}":
                    return self.reply(401, {"error": {"message": "invalid key"}})
                if question in endpoint.limited or ("flaky" in question and count <= endpoint.flaky):
                    return self.reply(429, {"error": {"message": "rate limited"}})
                n = {"one_choice": 1, "no_choices": 0}.get(endpoint.mode, body.get("n", 1))
                choices = [{"index": i, "finish_reason": "stop",
                            "message": {"role": "assistant",
                                        "content": endpoint.content or f"<answer> {'AB'[i % 2]} </answer>",
                                        "reasoning_content": f"look {i}"}} for i in range(n)]
                model = "another-model" if endpoint.mode == "other_model" else body["model"]
                self.reply(200, {"id": "c", "object": "chat.completion", "created": 0, "model": model,
                                 "choices": choices,
                                 "usage": {"prompt_tokens": 40, "completion_tokens": 5, "total_tokens": 45}})

            def reply(self, status, payload):
                data = b"<html>Welcome</html>" if endpoint.mode == "not_json" else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if endpoint.mode != "trickle":
                    return self.wfile.write(data)
                for i in range(len(data)):  # a byte every 10 ms: no read timeout ever trips
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.01)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    ep = Endpoint()
    yield ep
    ep.server.shutdown()


@pytest.fixture
def rows():
    rows = synthetic.make_eval_rows(rows_per_benchmark=1, seed=5)
    rows[1]["question"] = "flaky: which colour?"
    rows[4]["question"] = "limited: which shape?"
    return rows


def config(endpoint, tmp_path, rows, **kwargs):
    data = tmp_path / "eval"
    if not data.exists():
        to_dataset(rows).save_to_disk(str(data))
    return RunConfig(model="gpt-4o-2024-11-20", backend="api", output_dir=str(tmp_path / "out"),
                     dataset_name=str(data), api_base=endpoint.url, progress=False,
                     engine_kwargs={"max_retries": 3, "backoff": 0.01, "max_backoff": 0.02}, **kwargs)


def test_retries_report_and_resume(endpoint, tmp_path, rows):
    endpoint.limited.add("limited: which shape?")
    with pytest.raises(ApiRowsFailed) as failed:
        run(config(endpoint, tmp_path, rows))
    assert failed.value.failed.keys() == {4} and isinstance(failed.value, UserError)
    message = str(failed.value)
    assert message.startswith("api: 1 row(s) still failing (up to 4 attempts each), dataset_index 4 (4: "
                              "RateLimitError")
    assert message.endswith("fix: rerun the same command to retry them (every other row is kept), or raise "
                            "--engine_kwargs max_retries")
    out = tmp_path / "out"
    assert sorted(r["dataset_index"] for r in read_run(out)) == [0, 1, 2, 3, 5]
    assert endpoint.calls["flaky: which colour?"] == 3 and endpoint.calls["limited: which shape?"] == 4
    # the paper's API settings, sent on every request
    sent = {(b["temperature"], b["top_p"], b["max_tokens"], b["seed"], b["n"]) for b in endpoint.bodies}
    assert sent == {(0.0, 1.0, 4096, 42, 1)}

    endpoint.limited.clear()
    before = len(endpoint.bodies)
    table = run(config(endpoint, tmp_path, rows))
    assert len(endpoint.bodies) == before + 1  # only the missing row is asked again
    records = read_run(out)
    assert [r["dataset_index"] for r in records] == list(range(6))
    rollout = records[4]["rollouts"][0]
    assert rollout["output_text"] == "<think>look 0</think><answer> A </answer>"
    assert (rollout["pred_letter"], rollout["output_tokens"], rollout["finish_reason"]) == ("A", 5, "stop")
    assert records[4]["prompt_tokens"] == 40 and records[4]["image_tokens"] is None
    assert table["_average"]["accuracy"] >= 0
    assert all(SECRET not in p.read_text() for p in out.iterdir() if p.is_file())


def test_n_choices_and_their_token_shares(endpoint, tmp_path, rows):
    run(config(endpoint, tmp_path, rows[:1], n=2, temperature=1.0, dataset_size=1))
    [record] = read_run(tmp_path / "out")
    assert [r["output_text"] for r in record["rollouts"]] == [
        "<think>look 0</think><answer> A </answer>", "<think>look 1</think><answer> B </answer>"]
    assert [r["output_tokens"] for r in record["rollouts"]] == [3, 2]  # 5 for the request, in even shares
    assert endpoint.bodies[-1]["n"] == 2 and endpoint.bodies[-1]["temperature"] == 1.0


def test_a_bad_key_stops_at_once(endpoint, tmp_path, rows, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with pytest.raises(ValueError, match=r"answered 401 for model 'gpt-4o-2024-11-20'.*fix: check OPENAI_BASE_URL"):
        run(config(endpoint, tmp_path, rows, window=1))
    assert len(endpoint.bodies) == 1


def test_missing_key_and_bad_settings_are_one_line_errors(monkeypatch, tmp_path):
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(ValueError, match="environment variable MY_KEY is not set; fix: export MY_KEY=..."):
        ApiBackend("m", api_key_env="MY_KEY")
    with pytest.raises(ValueError, match=r"--engine_kwargs \['max_retry'\] are not settings of the api backend"):
        ApiBackend("m", api_key_env="HOME", max_retry=3)
    with pytest.raises(ValueError, match="--prompt_mode gemma3 .* the api backend sends chat messages; fix"):
        RunConfig(model="m", output_dir=str(tmp_path), backend="api", prompt_mode="gemma3")
    with pytest.raises(ValueError, match="--prompt_mode must be one of"):
        RunConfig(model="m", output_dir=str(tmp_path), prompt_mode="chatml")
    with pytest.raises(ValueError, match="unknown instruction prompt 'stepbystep'"):
        RunConfig(model="m", output_dir=str(tmp_path), instruction_prompt="stepbystep")


def test_reasoning_fields_of_real_reply_messages():
    from openai.types.chat import ChatCompletionMessage

    def message(**fields):
        return ChatCompletionMessage.model_validate({"role": "assistant", **fields})

    assert reply_text(message(content="<answer> B </answer>", reasoning_content="Because.")) == (
        "<think>Because.</think><answer> B </answer>")
    assert reply_text(message(content="C", reasoning="newer vLLM name")) == "<think>newer vLLM name</think>C"
    assert reply_text(message(content="D")) == "D"
    assert reply_text(message(content=None, reasoning_content="cut off")) == "<think>cut off</think>"


def test_the_command_line_reports_failures_in_one_line(endpoint, tmp_path, rows, monkeypatch):
    import importlib.util
    from pathlib import Path

    from click.testing import CliRunner

    script = Path(__file__).resolve().parent.parent / "eval" / "run_offline_inference.py"
    spec = importlib.util.spec_from_file_location("run_offline_inference", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = config(endpoint, tmp_path, rows)
    argv = ["--backend", "api", "--model", "m", "--api_base", endpoint.url, "--dataset_name", cfg.dataset_name,
            "--output_dir", cfg.output_dir, "--engine_kwargs", json.dumps(cfg.engine_kwargs)]
    endpoint.limited.add("limited: which shape?")
    failed = CliRunner().invoke(module.main, argv)
    assert failed.exit_code == 1
    [line] = [x for x in failed.output.splitlines() if x.startswith("error:")]
    assert line.startswith("error: api: 1 row(s) still failing") and "fix: rerun the same command" in line
    monkeypatch.delenv("OPENAI_API_KEY")
    missing = CliRunner().invoke(module.main, argv)
    assert missing.exit_code == 1
    assert "error: environment variable OPENAI_API_KEY is not set; fix: export OPENAI_API_KEY=..." in missing.output


@pytest.mark.parametrize("mode, settings, message", [
    ("other_model", {}, "answered with model 'another-model', not --model 'gpt-4o-2024-11-20'; fix"),
    ("one_choice", {"n": 4, "temperature": 1.0}, "returned 1 choice(s) for --n 4"),
    ("no_choices", {}, "answered with no choices; fix"),
    ("not_json", {}, "answered with something other than a chat completion ('<html>Welcome</html>'"),
])
def test_an_endpoint_answering_unlike_the_chat_api_stops_the_run_and_writes_nothing(endpoint, tmp_path, rows, mode,
                                                                                   settings, message):
    endpoint.mode = mode
    with pytest.raises(UserError, match=re.escape(message)):
        run(config(endpoint, tmp_path, rows, **settings))
    assert not any(p.read_text().strip() for p in (tmp_path / "out").glob("shard-*.jsonl"))


def test_a_reply_trickling_past_the_total_timeout_fails_the_row(endpoint, tmp_path, rows):
    endpoint.mode = "trickle"  # about 2.5 s per reply, one byte every 10 ms
    cfg = config(endpoint, tmp_path, rows[:1], dataset_size=1)
    cfg.engine_kwargs = {"max_retries": 1, "backoff": 0.01, "max_backoff": 0.02, "timeout": 0.5}
    started = time.monotonic()
    with pytest.raises(ApiRowsFailed, match=r"dataset_index 0 \(0: _ReplyDeadline: the reply took more than 0.5 s"):
        run(cfg)
    assert time.monotonic() - started < 10


def test_the_answering_model_is_kept_and_another_endpoint_cannot_resume(endpoint, tmp_path, rows):
    from medvlthinker.inference.run_state import RunMismatch

    run(config(endpoint, tmp_path, rows[:2], dataset_size=2))
    records = read_run(tmp_path / "out")
    assert {r["model"] for rec in records for r in rec["rollouts"]} == {"gpt-4o-2024-11-20"}
    other = Endpoint()
    try:
        cfg = config(endpoint, tmp_path, rows[:2], dataset_size=2)
        cfg.api_base = other.url
        with pytest.raises(RunMismatch, match="api_base"):
            run(cfg)
    finally:
        other.server.shutdown()


def test_the_option_writer_sends_through_the_same_client(endpoint, monkeypatch):
    from medvlthinker.inference.openai_client import EndpointError, RetryPolicy
    from medvlthinker.prepare.option_writer import OpenAIChat, write_options

    endpoint.content = '["Yes", "No"]'
    writer = OpenAIChat(base_url=endpoint.url)
    writer.retry = RetryPolicy(max_retries=3, backoff=0.01, max_backoff=0.02)
    result = write_options("flaky: is it red?", "yes", writer)
    assert (result.options, result.attempts, endpoint.calls["flaky: is it red?"]) == (["Yes", "No"], 1, 3)
    assert endpoint.bodies[-1]["model"] == "gpt-4o-2024-11-20" and "seed" not in endpoint.bodies[-1]

    # the api backend's total deadline: a trickling reply is a failed try, not a wait of minutes
    endpoint.mode = "trickle"
    slow = OpenAIChat(base_url=endpoint.url, max_retries=0, timeout=0.5)
    result = write_options("is it blue?", "no", slow, max_tries=1)
    assert result.options is None and result.errors[0].startswith("_ReplyDeadline: the reply took more than 0.5 s")

    # a bad key is the account's problem, not the row's: the build stops at the first reply
    endpoint.mode = None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    before = len(endpoint.bodies)
    with pytest.raises(EndpointError, match=r"answered 401 for model 'gpt-4o-2024-11-20'.*fix: check OPENAI_BASE_URL"):
        write_options("is it green?", "yes", OpenAIChat(base_url=endpoint.url))
    assert len(endpoint.bodies) == before + 1
