"""``ner-serve --label-studio`` against the real Label Studio (the ``label-studio`` package from PyPI), not a mock.

Label Studio runs from a virtual environment of its own (its Django pins must not meet the toolkit's): the
environment variable ``NER_LABEL_STUDIO_VENV`` names it (``.ci/run`` creates ``.venv-ls``). Without it the
test is skipped, except under ``CI=true``, where a missing Label Studio is a failure, not a silent skip.

Label Studio starts on 127.0.0.1 with its SQLite database and media in a temporary directory and a user and
API token from its environment variables; the test then drives it through its REST API only: a project with
an NER labeling config, tasks imported, our backend connected, predictions fetched, annotations submitted
(Label Studio sends them to the backend's webhook), a training round started, and the new model version's
predictions fetched.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from test_serve_label_studio import CONFIG, gold, ls_server

pytestmark = pytest.mark.integration

VENV = os.environ.get("NER_LABEL_STUDIO_VENV")
TOKEN = "0123456789abcdef0123456789abcdef01234567"
START_LIMIT = 300   # seconds: a first start migrates a new SQLite database
TRAIN_LIMIT = 300


def label_studio_command() -> Path:
    command = Path(VENV or "") / "bin" / "label-studio"
    if VENV and command.is_file():
        return command
    why = (f"Label Studio is not installed: set NER_LABEL_STUDIO_VENV to a venv with label-studio "
           f"(python -m venv /tmp/lsvenv && /tmp/lsvenv/bin/pip install label-studio); got {VENV!r}")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(why)
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudio:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"Token {TOKEN}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()[:2000]!r}") from None
        return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    command = label_studio_command()
    data = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "LABEL_STUDIO"))}
    # Our backend and its webhook are on loopback, which Label Studio refuses by default (SSRF protection).
    env.update(LABEL_STUDIO_BASE_DATA_DIR=str(data), LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
               DJANGO_DB="sqlite", LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true", ML_BLOCK_LOCAL_IP="false",
               SSRF_PROTECTION_ENABLED="false", COLLECT_ANALYTICS="false", PYTHONPATH="")
    started = time.monotonic()
    log = open(data / "label-studio.log", "wb")
    proc = subprocess.Popen([str(command), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port",
                             str(port), "--data-dir", str(data), "--username", "test@example.com",
                             "--password", "test-password-1", "--user-token", TOKEN, "--enable-legacy-api-token"],
                            cwd=data, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    studio = LabelStudio(f"http://127.0.0.1:{port}")
    try:
        while True:
            try:
                with urllib.request.urlopen(studio.url + "/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() - started > START_LIMIT:
                pytest.fail(f"Label Studio did not start within {START_LIMIT} s:\n"
                            + (data / "label-studio.log").read_text(errors="replace")[-4000:])
            time.sleep(1)
        print(f"Label Studio started in {time.monotonic() - started:.1f} s")
        yield studio
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def wait(what: str, check: Any, limit: float) -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {limit} s"
        time.sleep(1)


def predictions(studio: LabelStudio, task: int) -> list[dict]:
    out = studio.call("GET", f"/api/predictions?task={task}")
    return out if isinstance(out, list) else out.get("results", [])


def test_label_studio_drives_the_backend_from_predictions_to_a_new_model_version(
        label_studio: LabelStudio, trained, tmp_path: Path) -> None:
    backend = ls_server(trained.model_dir, tmp_path / "work")
    try:
        studio = label_studio
        project = studio.call("POST", "/api/projects", {"title": "ner_toolkit", "label_config": CONFIG})["id"]
        examples = gold(10)
        studio.call("POST", f"/api/projects/{project}/import", [{"sentence": text} for text, _ in examples])
        tasks = studio.call("GET", f"/api/tasks?project={project}&page_size=100")
        tasks = sorted(tasks["tasks"] if isinstance(tasks, dict) else tasks, key=lambda t: t["id"])
        assert [t["data"]["sentence"] for t in tasks] == [text for text, _ in examples]

        url = f"http://127.0.0.1:{backend.port}"
        ml = studio.call("POST", "/api/ml", {"url": url, "project": project, "title": "ner_toolkit"})
        # Annotations reach the backend through a project webhook (Label Studio sends none to a backend itself).
        studio.call("POST", "/api/webhooks", {"project": project, "url": url + "/webhook", "send_payload": True,
                                              "send_for_all_actions": False,
                                              "actions": ["ANNOTATION_CREATED", "ANNOTATION_UPDATED",
                                                          "ANNOTATIONS_DELETED"]})
        base = backend_health(backend)["model_version"]

        # Predictions for every task, through Label Studio's own action (it calls /predict).
        studio.call("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
                    {"selectedItems": {"all": True, "excluded": []}})
        got = {t["id"]: wait("predictions", lambda t=t: predictions(studio, t["id"]), 60) for t in tasks}
        found = 0
        for task in tasks:
            (prediction,) = got[task["id"]]
            assert prediction["model_version"] == base
            for region in prediction["result"]:
                found += 1
                assert (region["from_name"], region["to_name"]) == ("ner", "doc")
                value = region["value"]
                assert task["data"]["sentence"][value["start"]:value["end"]] == value["text"]
        assert found, "no entity predicted: the regions were never checked"

        # Annotations submitted in Label Studio reach the backend's corpus through its webhook.
        for task, (text, spans) in zip(tasks[:8], examples):
            result = []
            for words, label in spans:
                start = text.index(words)
                result.append({"from_name": "ner", "to_name": "doc", "type": "labels",
                               "value": {"start": start, "end": start + len(words), "text": words,
                                         "labels": [label]}})
            studio.call("POST", f"/api/tasks/{task['id']}/annotations", {"result": result, "was_cancelled": False,
                                                                          "ground_truth": False, "lead_time": 1.0})
        wait("annotations at the backend", lambda: backend_health(backend)["annotations"] == 8, 60)

        # Training, started from Label Studio; the new version serves once the round is done.
        studio.call("POST", f"/api/ml/{ml['id']}/train", {})
        last = wait("a training round", lambda: (backend_health(backend)["training"]["last"] or {}).get("state")
                    in ("done", "failed") and backend_health(backend)["training"]["last"], TRAIN_LIMIT)
        assert last["state"] == "done", last
        new = last["model_version"]
        assert new != base and backend_health(backend)["model_version"] == new

        # Label Studio picks the new version up and its predictions carry it.
        studio.call("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
                    {"selectedItems": {"all": True, "excluded": []}})
        fresh = wait("the new version's predictions",
                     lambda: [p for p in predictions(studio, tasks[9]["id"]) if p["model_version"] == new], 60)
        assert fresh[0]["result"] is not None
    finally:
        backend.stop()


def backend_health(backend: Any) -> dict:
    from test_serve import request

    status, out = request(backend.port, "GET", "/health")
    assert status == 200, out
    return out
