"""A client of ``ner-serve --label-studio`` that speaks as Label Studio does (the standard library's HTTP):
for scripts and simulations that drive the annotation loop without Label Studio itself.

    client = Client("http://127.0.0.1:9090", label_config=XML)
    results = client.predict([{"id": 1, "data": {"text": "..."}}])      # one result per task
    client.annotate(labelstudio.annotation_payload(1, text, spans, client.config))
    version = client.train(timeout=600)["model_version"]                # a round, waited for
"""
from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from typing import Any, Optional

from .labelstudio import LabelConfig, parse_label_config


class BackendError(RuntimeError):
    """The backend answered an error status, or a round failed: the message has its answer."""


class Client:
    def __init__(self, url: str, label_config: str, timeout: float = 300) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.label_config, self.timeout = label_config, timeout
        self.config: LabelConfig = parse_label_config(label_config)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read() or b"null")
        finally:
            connection.close()
        if response.status >= 400:
            raise BackendError(f"{method} {path}: {response.status} {answer}")
        return answer

    def health(self) -> dict:
        return self.call("GET", "/health")

    def predict(self, tasks: list[dict]) -> list[dict]:
        """Label Studio's ``/predict``: ``{"result", "score", "model_version"}`` per task, in task order."""
        return self.call("POST", "/predict", {"tasks": tasks, "label_config": self.label_config})["results"]

    def annotate(self, payload: dict) -> dict:
        """Post a webhook payload (``labelstudio.annotation_payload``); the backend's ``result``."""
        payload = {**payload, "project": {"label_config": self.label_config}}
        return self.call("POST", "/webhook", payload)["result"]

    def start_round(self) -> int:
        """``START_TRAINING``: the number of the round that will hold the annotations posted so far."""
        return self.call("POST", "/webhook", {"action": "START_TRAINING"})["result"]["number"]

    def wait_round(self, number: int, timeout: Optional[float] = None, poll: float = 0.5) -> dict:
        """Round ``number`` once it has ended (``BackendError`` if it failed): its ``model_version`` serves."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            last = self.health()["training"]["last"]
            if last is not None and last["number"] >= number:
                if last["number"] == number and last["state"] != "done":
                    raise BackendError(f"training round {number} failed: {last['error']}")
                return last
            if time.monotonic() > deadline:
                raise TimeoutError(f"training round {number} did not end in time")
            time.sleep(poll)

    def train(self, timeout: Optional[float] = None) -> dict:
        """A round on the annotations posted so far, waited for."""
        return self.wait_round(self.start_round(), timeout)
