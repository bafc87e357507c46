"""The api backend against a real OpenAI-compatible server: vLLM's own (CPU build) serving the tiny model, started
by the module fixture, and killed and restarted mid-run by the second test (two server starts in all).

Greedy records of the api backend equal the hf backend's on the same rows (56x56 images, so neither
qwen-vl-utils nor the server's processor resizes them); the server renders the same prompt tokens as the
project's chat template and processor, and its first-token log-probabilities match transformers' forward pass (the
tiny random model answers mostly newlines, so the texts alone would say little).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from medvlthinker.data import to_dataset
from medvlthinker.demo import synthetic
from medvlthinker.inference.api_backend import ApiRowsFailed, api_messages
from medvlthinker.inference.records import read_run, shard_files
from medvlthinker.inference.requests import ApiRequestBuilder, RequestBuilder
from medvlthinker.inference.run_config import RunConfig
from medvlthinker.inference.runner import run

SECRET = "sk-local-test-3f9e1c"  # a local server takes any key; this one must never reach a file
MAX_TOKENS = 24
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


class LocalServer:
    """``python -m vllm.entrypoints.openai.api_server`` on a free port, in its own process group (the API server
    spawns the engine core: a kill takes the whole group)."""

    def __init__(self, model: Path, log_dir: Path, max_images: int) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.model, self.log_dir, self.max_images = model, log_dir, max_images
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
        env.update(VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
        self.log = self.log_dir / f"server-{self.starts}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
             "--served-model-name", "tiny", "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
             "--seed", "42", "--host", "127.0.0.1", "--port", str(self.port),
             # the worker inside the engine-core process: one process fewer to start on 2 cores
             "--distributed-executor-backend", "uni",
             "--limit-mm-per-prompt", json.dumps({"image": self.max_images, "video": 0})],
            env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 420.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"vLLM server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        pytest.fail(f"vLLM server not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def rows():
    return synthetic.make_eval_rows(rows_per_benchmark=2, seed=3, image_size=(56, 56))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("api") / "eval"
    to_dataset(rows).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, rows):
    srv = LocalServer(tiny_model_dir, tmp_path_factory.mktemp("server"),
                      max(len(r["images"] or []) for r in rows))
    srv.start()  # not waited for here: the offline reference runs while the server starts
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture(scope="module")
def api_env():
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = SECRET
    yield
    if old is None:
        os.environ.pop("OPENAI_API_KEY")
    else:
        os.environ["OPENAI_API_KEY"] = old


def api_config(server, dataset_dir, out, **kwargs):
    return RunConfig(model="tiny", output_dir=str(out), backend="api", dataset_name=str(dataset_dir),
                     max_tokens=MAX_TOKENS, api_base=server.base_url, progress=False, **kwargs)


@pytest.fixture(scope="module")
def api_records(server, api_env, dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("api_run")
    server.wait_ready()
    run(api_config(server, dataset_dir, out))
    return out, read_run(out)


@pytest.fixture(scope="module")
def hf_records(server, tiny_model_dir, dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf_run")
    run(RunConfig(model=str(tiny_model_dir), output_dir=str(out), backend="hf", dataset_name=str(dataset_dir),
                  max_tokens=MAX_TOKENS, progress=False))
    return read_run(out)


def test_api_records_equal_the_offline_backend_greedy(tiny_model_dir, tiny_processor, server, rows, hf_records,
                                                      api_records):
    import torch
    from transformers import AutoModelForImageTextToText

    out, api = api_records
    hf = hf_records
    assert [r["dataset_index"] for r in api] == list(range(len(rows)))
    # everything but the prompt text (the api record keeps the user text; the server renders the template),
    # image_tokens (the API does not report it) and the rollouts' answering model (only the API names one)
    def comparable(record):
        out = {k: v for k, v in record.items() if k not in ("prompt", "image_tokens")}
        out["rollouts"] = [{k: v for k, v in r.items() if k != "model"} for r in record["rollouts"]]
        return out
    assert [comparable(r) for r in api] == [comparable(r) for r in hf]
    assert {r["model"] for record in api for r in record["rollouts"]} == {"tiny"}
    assert all(r["image_tokens"] is None and r["prompt"] in h["prompt"] for r, h in zip(api, hf))
    assert {len(r["rollouts"][0]["output_text"]) for r in api} != {0}

    # the server renders our messages into exactly the project's prompt tokens (template and image expansion)
    offline = RequestBuilder(tiny_processor)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for row in rows[::3]:
        request = ApiRequestBuilder().build(row)
        local = offline.build(row)
        expected = tiny_processor(text=[local.prompt], images=local.images or None, return_tensors="pt")
        served = httpx.post(f"http://127.0.0.1:{server.port}/tokenize", timeout=60,
                            json={"model": "tiny", "messages": api_messages(request)}).json()
        assert served["tokens"] == expected["input_ids"][0].tolist()
        # and the model sees the same pixels: first-token log-probabilities agree with transformers'
        from openai import OpenAI

        reply = OpenAI(api_key=SECRET, base_url=server.base_url, max_retries=0).chat.completions.create(
            model="tiny", messages=api_messages(request), temperature=0, max_tokens=1, logprobs=True,
            top_logprobs=5)
        top = reply.choices[0].logprobs.content[0].top_logprobs
        with torch.inference_mode():
            logits = model(**expected).logits[0, -1].float()
        reference = torch.log_softmax(logits, -1)
        got = torch.tensor([t.logprob for t in top])
        assert torch.allclose(got, reference.topk(5).values, atol=2e-3), (got, reference.topk(5))
        assert top[0].token == tiny_processor.tokenizer.decode([int(reference.argmax())])

    # the key was used, never written
    assert all(SECRET not in p.read_text() for p in out.iterdir() if p.is_file())
    args = json.loads((out / "args.json").read_text())["args"]
    assert args["backend"] == "api" and args["api_key_env"] == "OPENAI_API_KEY"


def _lines(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in shard_files(out))


def test_server_killed_mid_run_rows_reported_then_resumed(tmp_path, server, dataset_dir, rows, api_records):
    server.wait_ready()
    out = tmp_path / "killed"
    # one request at a time, and few retries: rows in flight when the server dies fail fast and are reported
    config = api_config(server, dataset_dir, out, window=1,
                        engine_kwargs={"max_retries": 1, "backoff": 0.1, "max_backoff": 0.2})
    errors: list[BaseException] = []

    def target():
        try:
            run(config)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 300
    while _lines(out) < 3 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()
    thread.join(timeout=300)
    written = {r["dataset_index"] for r in read_run(out)}
    assert 3 <= len(written) < len(rows), "the run finished before the server was killed"
    assert len(errors) == 1 and isinstance(errors[0], ApiRowsFailed), errors
    missing = set(range(len(rows))) - written
    assert set(errors[0].failed) == missing
    assert "dataset_index " + ", ".join(str(i) for i in sorted(missing)) in str(errors[0])
    assert "rerun the same command" in str(errors[0]) and "APIConnectionError" in str(errors[0])
    assert not (out / "eval_results.jsonl").exists()

    # restart the server and rerun at once: the rerun retries (connection refused) until the server is up, asks
    # only for the missing rows, and completes the run
    server.start()
    patient = api_config(server, dataset_dir, out, window=1,
                         engine_kwargs={"max_retries": 200, "backoff": 0.5, "max_backoff": 3.0})
    table = run(patient)
    assert table is not None and server.starts == 2
    resumed = read_run(out)
    assert [r["dataset_index"] for r in resumed] == list(range(len(rows)))
    assert resumed == api_records[1]
