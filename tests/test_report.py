"""The HTML report: one self-contained file; in headless Chromium it loads without console errors, its filters
work and it shows the table (the screenshot is kept under the test's tmp_path for a look).

The browser test needs Debian's ``chromium`` package (``apt-get install -y chromium``); without it, it is skipped.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from test_tables import ROOT, make_records, write_run

from medvlthinker.analysis import report, tables
from medvlthinker.analysis.runs import load_runs
from medvlthinker.data import to_dataset
from medvlthinker.demo import synthetic

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A report over two models (two repeats each) with thumbnails from a saved eval set, and a sampling run."""
    tmp = tmp_path_factory.mktemp("report")
    rows = synthetic.make_eval_rows(rows_per_benchmark=4, seed=9, image_size=(48, 48))
    # One output tries to break out of its <pre> and the JSON <script>: it must stay text.
    rows[0]["question"] = "Is </script><b id='injected'>this</b> red?"
    to_dataset(rows).save_to_disk(str(tmp / "evalset"))
    for r in range(2):
        write_run(tmp / "runs" / "base" / f"r{r}", make_records(rows, seed=r, p_correct=0.4, p_unparsed=0.2))
        write_run(tmp / "runs" / "sft" / f"r{r}", make_records(rows, seed=10 + r, p_correct=0.7))
    write_run(tmp / "sampling", make_records(rows, seed=3, n_rollouts=4))
    out = report.make_report(report.ReportSettings(
        tmp / "out", tables.TableSettings(runs_root=tmp / "runs", eval_data=str(tmp / "evalset"),
                                          compare=["base=Qwen2.5-VL-3B-Instruct"], paired=("sft", "base"),
                                          n_resamples=100),
        sampling_runs=[f"sft={tmp / 'sampling'}"], published_models=["Qwen2.5-VL-3B-Instruct"],
        samples_per_benchmark=3,
    ))
    html = open(out["report"], encoding="utf-8").read()
    data = json.loads(re.search(r'<script id="samples-data" type="application/json">(.*?)</script>', html,
                                re.S).group(1))
    samples = [s | {"thumbnails": data["thumbnails"][str(s["dataset_index"])]} for s in data["samples"]]
    return {"out": out, "html": html, "samples": samples, "tmp": tmp}


def test_report_is_one_self_contained_file(built):
    html, out = built["html"], built["out"]
    assert sorted(os.listdir(os.path.dirname(out["report"]))) == ["plots", "report.html", "tables"]
    # Nothing is fetched: every src/href is a data URI or an in-page anchor.
    for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert ref.startswith("data:") or ref.startswith("#"), ref
    assert "<link" not in html and "http://" not in html and "https://" not in html
    assert html.count('<img src="data:image/png;base64,') == 3  # radar, metrics@n, pass@k
    assert html.count("data:image/jpeg;base64,") == 6 * 3 + 2 * 3  # each row's thumbnails once, not per model
    assert "</script><b id='injected'>" not in html  # the question stays inside the JSON, escaped


def test_report_samples_follow_the_records(built):
    samples = built["samples"]
    assert len(samples) == 2 * 6 * 3
    assert {s["model"] for s in samples} == {"base", "sft"}
    assert [s["dataset_index"] for s in samples if s["model"] == "base"] == [
        s["dataset_index"] for s in samples if s["model"] == "sft"
    ]
    base = load_runs([("base", str(built["tmp"] / "runs" / "base" / "r0"))])[0].repeats[0]
    by_index = {r["dataset_index"]: r for r in base}
    for s in samples:
        if s["model"] != "base":
            continue
        record = by_index[s["dataset_index"]]
        assert s["status"] == report.record_status(record)
        assert s["output"] == record["rollouts"][0]["output_text"]
        assert s["answer_label"] == record["answer_label"]
        n_images = 2 if s["benchmark"] in ("MMMU", "MedX-M") else 1
        assert len(s["thumbnails"]) == n_images and s["thumbnails"][0].startswith("data:image/jpeg;base64,")
    assert {s["status"] for s in samples} == set(report.STATUSES)


def test_record_status_and_thumbnails():
    row = synthetic.make_eval_rows(rows_per_benchmark=1, seed=0)[0]
    record = make_records([row], seed=0, p_correct=1.0)[0]
    assert report.record_status(record) == "correct"
    record["rollouts"][0] |= {"pred_letter": "I cannot tell", "is_correct": False}
    assert report.record_status(record) == "unparsed"
    uri = report.thumbnail_uri(synthetic.draw_image("red", "circle", (640, 320), 0), max_side=100)
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert img.format == "JPEG" and img.size == (100, 50)


def test_make_report_cli(built, tmp_path):
    tmp = built["tmp"]
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "analysis", "make_report.py"), "--run", f"base={tmp / 'runs/base/r0'}",
         "--n_resamples", "50", "--samples_per_benchmark", "1", "--output_dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert f"report: {tmp_path / 'r' / 'report.html'}" in result.stdout
    html = (tmp_path / "r" / "report.html").read_text()
    data = json.loads(re.search(r'<script id="samples-data" type="application/json">(.*?)</script>', html,
                                re.S).group(1))
    assert len(data["samples"]) == 6 and all(v == [] for v in data["thumbnails"].values())  # no --eval-data


# ---- headless Chromium -------------------------------------------------------------------------------------------


class DevTools:
    """A minimal Chrome DevTools protocol client over the page's websocket."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def eval(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def click(self, selector: str):
        """A real mouse click at the centre of the element."""
        box = self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
                        f" const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    pytest.importorskip("websocket", reason="websocket-client is needed to drive chromium")
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--disable-extensions", "--remote-debugging-port=0", "--remote-allow-origins=*",
         f"--user-data-dir={profile}", "--window-size=1400,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        client = DevTools(page["webSocketDebuggerUrl"])
        yield client
        client.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_report_in_headless_chromium(built, browser, tmp_path):
    page = browser
    for domain in ("Page", "Runtime", "Log", "Network"):
        page.call(f"{domain}.enable")
    page.call("Page.navigate", url="file://" + os.path.abspath(built["out"]["report"]))
    page.wait_for("Page.loadEventFired")

    errors = [e for e in page.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == []
    requested = [e["params"]["request"]["url"] for e in page.events if e.get("method") == "Network.requestWillBeSent"]
    assert all(u.startswith(("file://", "data:")) for u in requested), requested
    assert page.eval("document.getElementById('injected') === null")

    samples = built["samples"]
    visible = "document.querySelectorAll('tr.sample:not([hidden])')"
    assert page.eval(f"{visible}.length") == len(samples)
    assert page.eval("document.getElementById('shown-count').textContent") == str(len(samples))
    assert page.eval("document.querySelectorAll('#results-table tbody tr').length") == 2
    assert page.eval("document.querySelectorAll('td.thumbs img').length") == sum(len(s["thumbnails"]) for s in samples)
    assert page.eval("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")

    page.click('button.filter[data-filter="status"][data-value="wrong"]')
    wrong = sum(s["status"] == "wrong" for s in samples)
    assert 0 < wrong < len(samples)
    assert page.eval(f"{visible}.length") == wrong
    assert page.eval(f"Array.from({visible}).every(r => r.dataset.status === 'wrong')")

    page.click('button.filter[data-filter="benchmark"][data-value="SLAKE"]')
    assert page.eval(f"{visible}.length") == sum(s["status"] == "wrong" and s["benchmark"] == "SLAKE" for s in samples)
    page.click('button.filter[data-filter="status"][data-value="unparsed"]')
    page.click('button.filter[data-filter="benchmark"][data-value="all"]')
    page.click('button.filter[data-filter="model"][data-value="base"]')
    expected = sum(s["status"] == "unparsed" and s["model"] == "base" for s in samples)
    assert expected > 0 and page.eval(f"{visible}.length") == expected
    assert page.eval("document.getElementById('shown-count').textContent") == str(expected)

    page.eval("window.scrollTo(0, 0)")
    shot = page.call("Page.captureScreenshot", format="png")
    path = tmp_path / "report.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    from PIL import Image

    with Image.open(path) as img:
        assert img.size[0] >= 1000 and len(img.convert("RGB").getcolors(1 << 24)) > 50
    # The table is in view at the top of the page.
    top = page.eval("document.getElementById('results-table').getBoundingClientRect().top")
    assert 0 < top < 600
    errors = [e for e in page.events if e.get("method") == "Runtime.exceptionThrown"]
    assert errors == []
