"""``ner-serve --label-studio``: Label Studio's ML-backend protocol on a real server on loopback (the
integration test against Label Studio itself is test_label_studio_integration.py), and its parts in-process:
the labeling config, annotations as corpus records, the corpus file, the training file of partial labels."""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import REPO, SAMPLE, assert_user_error
from test_serve import Server, _env, request, sentences

pytest.importorskip("starlette")

from ner_toolkit.serve.corpus import Corpus, write_training_file  # noqa: E402
from ner_toolkit.serve.labelstudio import (AnnotationProblem, ConfigProblem, Record, parse_label_config,  # noqa: E402
                                           record_of)

# Names other than Label Studio's template's, so that the answer must have read them from the config.
CONFIG = """<View>
  <Labels name="ner" toName="doc"><Label value="PER"/><Label value="ORG"/><Label value="LOC"/>
    <Label value="MISC"/><Label value="PRODUCT"/></Labels>
  <Text name="doc" value="$sentence"/>
  <Choices name="done" toName="doc"><Choice value="incomplete"/></Choices>
</View>"""
TEXTS = [" ".join(s) for s in sentences(12)]


def gold(n: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """The first ``n`` sentences of the sample test set as (text, [(entity words, type), ...])."""
    out = []
    for block in (SAMPLE / "test.txt").read_text(encoding="utf-8").split("\n\n"):
        if not block.strip() or block.startswith("-DOCSTART-"):
            continue
        rows = [line.split() for line in block.strip().splitlines()]
        spans: list[tuple[list[str], str]] = []
        for i, row in enumerate(rows):
            tag = row[-1]
            if tag == "O":
                continue
            kind = tag.split("-", 1)[1]
            if spans and not tag.startswith("B-") and rows[i - 1][-1] != "O" and spans[-1][1] == kind:
                spans[-1][0].append(row[0])
            else:
                spans.append(([row[0]], kind))
        out.append((" ".join(r[0] for r in rows), [(" ".join(words), kind) for words, kind in spans]))
    return out[:n]


class LabelStudioServer(Server):
    def wait_ready(self, timeout: float = 60) -> "LabelStudioServer":
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("server did not start:\n" + "\n".join(self.lines))
        status, health = request(self.port, "GET", "/health")
        assert status == 200 and health["status"] == "UP", health
        return self


def ls_server(model: Path, work: Path, *args: str) -> LabelStudioServer:
    s = LabelStudioServer(model, "--label-studio", "--work-dir", str(work), "--train-set", "training.epochs=2", *args)
    s.work = work
    return s.wait_ready()


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    s = ls_server(trained.model_dir, tmp_path_factory.mktemp("ls-work"))
    yield s
    s.stop()


def tasks(texts: list[str], first_id: int = 1) -> list[dict]:
    return [{"id": first_id + i, "data": {"sentence": t}} for i, t in enumerate(texts)]


def ls_predict(port: int, task_list: list[dict]) -> dict:
    status, out = request(port, "POST", "/predict", {"tasks": task_list, "label_config": CONFIG, "params": {}})
    assert status == 200, out
    return out


def annotation(task_id: int, text: str, spans: list[tuple[str, str]], aid: int, partial: bool = False) -> dict:
    """A webhook payload as Label Studio sends it on submit: ``spans`` are (words, label) found in ``text``."""
    result = []
    for words, label in spans:
        start = text.index(words)
        result.append({"id": f"r{len(result)}", "from_name": "ner", "to_name": "doc", "type": "labels",
                       "value": {"start": start, "end": start + len(words), "text": words, "labels": [label]}})
    if partial:
        result.append({"from_name": "done", "to_name": "doc", "type": "choices", "value": {"choices": ["incomplete"]}})
    return {"action": "ANNOTATION_CREATED", "annotation": {"id": aid, "result": result, "was_cancelled": False},
            "task": {"id": task_id, "data": {"sentence": text}}, "project": {"id": 1, "label_config": CONFIG}}


# --- the protocol, in-process ----------------------------------------------------------------------------------

def test_the_labeling_config_names_the_control_the_object_and_the_data_key() -> None:
    config = parse_label_config(CONFIG)
    assert (config.from_name, config.to_name, config.text_key) == ("ner", "doc", "sentence")
    assert config.labels == ("PER", "ORG", "LOC", "MISC", "PRODUCT")
    for bad, needle in [("<View><Text name='t' value='$text'/></View>", "no <Labels"), ("<View>", "not well-formed"),
                        ("", "no labeling config"),
                        ("<View><Labels name='l' toName='t'><Label value='A'/></Labels>"
                         "<Text name='t' value='$u' valueType='url'/></View>", "no <Labels")]:
        with pytest.raises(ConfigProblem, match=needle):
            parse_label_config(bad)


def test_annotations_become_records_with_python_offsets() -> None:
    config = parse_label_config(CONFIG)
    text = "I 😀 met Peter Blackburn"
    # Label Studio counts UTF-16 units: the emoji is two, so Peter starts one unit later than in Python.
    payload = annotation(5, text, [("Peter Blackburn", "PER")], aid=9)
    value = payload["annotation"]["result"][0]["value"]
    value["start"], value["end"] = value["start"] + 1, value["end"] + 1
    record = record_of(payload["task"], payload["annotation"], config)
    assert record is not None and record.entities == [[text.index("Peter"), len(text), "PER"]]
    assert not record.partial and record.annotation == 9
    partial = annotation(5, text, [("Peter", "PER")], aid=9, partial=True)
    assert record_of(partial["task"], partial["annotation"], config).partial
    skipped = annotation(5, text, [], aid=9)
    skipped["annotation"]["was_cancelled"] = True
    assert record_of(skipped["task"], skipped["annotation"], config) is None
    with pytest.raises(AnnotationProblem, match="task 5: its data has no string \"sentence\""):
        record_of({"id": 5, "data": {"text": text}}, payload["annotation"], config)


def test_the_corpus_file_is_one_record_per_task_and_survives_a_restart(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path)
    corpus.put(Record(2, 20, "b", [[0, 1, "PER"]]))
    corpus.put(Record(1, 10, "a", []))
    corpus.put(Record(2, 21, "bb", [[0, 2, "ORG"]]))  # an update replaces
    lines = [json.loads(line) for line in (tmp_path / "annotations.jsonl").read_text().splitlines()]
    assert [(r["task"], r["annotation"], r["text"]) for r in lines] == [(1, 10, "a"), (2, 21, "bb")]
    assert Corpus(tmp_path).records == corpus.records
    assert corpus.remove(annotations=[21]) == 1 and list(Corpus(tmp_path).records) == [1]
    assert not list(tmp_path.glob("*tmp*")), "a temporary file was left behind"


def test_incomplete_annotations_train_as_partial_labels(tmp_path: Path) -> None:
    text = "Peter Blackburn visited Bonn ."
    records = [Record(1, 1, text, [[0, 15, "PER"]], partial=True), Record(2, 2, text, [[24, 28, "LOC"]])]
    assert write_training_file(records, tmp_path / "train.jsonl", "conll", "?") == 2
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert rows[0] == {"tokens": ["Peter", "Blackburn", "visited", "Bonn", "."],
                       "ner_tags": ["B-PER", "I-PER", "?", "?", "?"]}
    assert rows[1] == {"text": text, "entities": [[24, 28, "LOC"]]}


# --- the server ------------------------------------------------------------------------------------------------

def test_predict_answers_one_result_per_task_in_order(server: LabelStudioServer) -> None:
    assert ls_predict(server.port, [])["results"] == []
    texts = TEXTS[:6] + ["", "Peter 😀 Blackburn met Peter Blackburn in Bonn ."] + TEXTS[6:]
    task_list = tasks(texts)
    task_list.insert(3, {"id": 99, "data": {"other": "no sentence here"}})
    out = ls_predict(server.port, task_list)
    assert len(out["results"]) == len(task_list)
    version = out["model_version"]
    assert version.startswith("base-")
    found = 0
    for task, result in zip(task_list, out["results"]):
        assert result["model_version"] == version and 0.0 <= result["score"] <= 1.0
        text = task["data"].get("sentence")
        if text is None or not text:
            assert result["result"] == []
            continue
        units = text.encode("utf-16-le")
        for region in result["result"]:
            found += 1
            assert (region["from_name"], region["to_name"], region["type"]) == ("ner", "doc", "labels")
            value = region["value"]
            # Offsets in UTF-16 units, as Label Studio indexes: they select the region's text.
            assert units[2 * value["start"]:2 * value["end"]].decode("utf-16-le") == value["text"]
            assert value["labels"][0] in {"PER", "ORG", "LOC", "MISC"} and 0.0 < region["score"] <= 1.0
    assert found, "the tiny model found no entity: the offsets were never checked"
    # The same tasks one by one: the same answers (a task's result does not depend on its batch-mates).
    single = ls_predict(server.port, task_list[:2])["results"]
    assert [r["result"] for r in single] == [r["result"] for r in out["results"][:2]]


def test_setup_reports_labels_the_model_does_not_know_and_refuses_a_config_it_cannot_read(
        server: LabelStudioServer) -> None:
    status, out = request(server.port, "POST", "/setup", {"project": "1.1700000000", "schema": CONFIG,
                                                          "extra_params": None})
    assert status == 200 and out["labels_not_in_model"] == ["PRODUCT"] and out["model_version"].startswith("base-")
    status, out = request(server.port, "POST", "/setup", {"project": "1.1", "schema": "<View><Text/></View>"})
    assert status == 422 and "<Labels" in out["error"]
    assert sum("PRODUCT" in line and "unknown to model" in line for line in server.lines) == 1  # reported once
    status, out = request(server.port, "POST", "/predict", {"tasks": tasks(["a"]), "label_config": "<View"})
    assert status == 422 and "not well-formed" in out["error"]
    status, out = request(server.port, "POST", "/predict", {"tasks": tasks(["a"]), "label_config": {"View": []}})
    assert status == 422 and "XML text" in out["error"]
    status, health = request(server.port, "GET", "/")
    assert status == 200 and health["status"] == "UP" and health["model_class"] == "ner_toolkit"


def test_webhooks_keep_update_and_delete_the_tasks_annotations(trained, tmp_path: Path) -> None:
    s = ls_server(trained.model_dir, tmp_path)
    try:
        corpus = tmp_path / "annotations.jsonl"

        def records() -> list[dict]:
            return [json.loads(line) for line in corpus.read_text().splitlines()]

        (first, _), (second, _), (third, _) = gold(3)
        status, out = request(s.port, "POST", "/webhook", annotation(1, first, [("JAPAN", "LOC")], aid=11))
        assert status == 201 and out["result"]["kept"]
        status, out = request(s.port, "POST", "/webhook", annotation(2, second, [("Nadim Ladki", "GPE")], aid=12))
        assert out["result"]["new_labels"] == ["GPE"]  # learned by the next round
        update = annotation(1, first, [("JAPAN", "LOC"), ("CHINA", "PER")], aid=11)
        update["action"] = "ANNOTATION_UPDATED"
        request(s.port, "POST", "/webhook", update)
        assert [(r["task"], [e[2] for e in r["entities"]]) for r in records()] == [(1, ["LOC", "PER"]), (2, ["GPE"])]
        status, out = request(s.port, "POST", "/webhook", {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 12}]})
        assert status == 201 and out["result"]["removed"] == 1 and [r["task"] for r in records()] == [1]
        status, out = request(s.port, "POST", "/webhook", {"action": "PROJECT_UPDATED", "project": {"id": 1}})
        assert status == 200 and out == {"status": "Unknown event"}
        bad = annotation(3, third, [("AL-AIN", "LOC")], aid=13)
        bad["annotation"]["result"][0]["value"]["end"] = 10_000
        status, out = request(s.port, "POST", "/webhook", bad)
        assert status == 422 and "task 3" in out["error"] and [r["task"] for r in records()] == [1]
        assert request(s.port, "GET", "/health")[1]["annotations"] == 1
    finally:
        s.stop()


def test_a_training_round_swaps_the_model_without_dropping_a_request(trained, tmp_path: Path) -> None:
    s = ls_server(trained.model_dir, tmp_path)
    try:
        # No annotations yet: the round fails, is reported, and the server carries on.
        status, out = request(s.port, "POST", "/webhook", {"action": "START_TRAINING", "project": {"id": 1}})
        assert status == 201 and out["result"]["number"] == 1
        last = wait_for_round(s.port, 1)
        assert last["state"] == "failed" and "no annotations" in last["error"]
        base = ls_predict(s.port, tasks(TEXTS[:1]))["model_version"]
        for i, (text, spans) in enumerate(gold(8)):
            request(s.port, "POST", "/webhook", annotation(i + 1, text, spans, aid=100 + i, partial=i % 3 == 2))
        status, out = request(s.port, "POST", "/webhook", {"action": "START_TRAINING", "project": {"id": 1}})
        assert out["result"]["number"] == 2
        status, queued = request(s.port, "POST", "/webhook", {"action": "START_TRAINING", "project": {"id": 1}})
        assert queued["result"] == {**queued["result"], "number": 3, "state": "queued"}
        answers = hammer_until(s.port, lambda: wait_for_round(s.port, 2, timeout=0) is not None, limit=240)
        assert answers, "no request was made during the round"
        assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
        versions = {v for _, v in answers}
        health = request(s.port, "GET", "/health")[1]
        last = health["training"]["last"]
        assert last["state"] == "done" and last["examples"] == 8, last
        new = health["model_version"]
        assert new == last["model_version"] and new.startswith("round-2-") and new != base
        assert base in versions and new in versions  # requests were answered before, during and after the swap
        assert ls_predict(s.port, tasks(TEXTS[:3]))["model_version"] == new
        rows = [json.loads(line) for line in (tmp_path / "rounds" / "0002" / "train.jsonl").read_text().splitlines()]
        assert sum("ner_tags" in r for r in rows) == 2 and len(rows) == 8  # tasks 3 and 6 were incomplete
        # The queued round started when round 2 ended; a SIGTERM stops it with the server.
        assert health["training"]["current"]["number"] == 3 and health["training"]["queued"] is None
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(60) == 0
    finally:
        s.stop()


def training_processes(directory: Path) -> list[int]:
    """Pids of processes whose command line names ``directory`` (a round's training run)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(directory).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_train_takes_the_tasks_annotations_and_sigterm_stops_a_running_round(trained, tmp_path: Path) -> None:
    s = ls_server(trained.model_dir, tmp_path)
    try:
        status, out = request(s.port, "POST", "/train", {"annotations": "all of them"})
        assert status == 422 and "annotations" in out["error"]
        annotated = [{"id": i + 1, "data": {"sentence": text},
                      "annotations": [annotation(i + 1, text, spans, aid=50 + i)["annotation"]]}
                     for i, (text, spans) in enumerate(gold(4))]
        status, out = request(s.port, "POST", "/train", {"annotations": annotated, "label_config": CONFIG,
                                                         "project": "1.1700000000"})
        assert status == 201 and out["job"] == "1" and out["result"]["state"] == "running"
        assert request(s.port, "GET", "/health")[1]["annotations"] == 4
        run = tmp_path / "rounds" / "0001"
        deadline = time.monotonic() + 60
        while not training_processes(run):
            assert time.monotonic() < deadline, "the training process did not start"
            time.sleep(0.1)
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(60) == 0
        time.sleep(0.5)
        assert training_processes(run) == [], "the training process outlived the server"
    finally:
        s.stop()


def wait_for_round(port: int, number: int, timeout: float = 240) -> Any:
    """``/health``'s ``training.last`` once round ``number`` has ended (None when ``timeout`` is 0 and it has not)."""
    deadline = time.monotonic() + timeout
    while True:
        last = request(port, "GET", "/health")[1]["training"]["last"]
        if last is not None and last["number"] >= number:
            return last
        if time.monotonic() >= deadline:
            if timeout == 0:
                return None
            pytest.fail(f"round {number} did not end within {timeout} s")
        time.sleep(0.2)


def hammer_until(port: int, done: Any, limit: float) -> list[tuple[int, str]]:
    """Clients of mixed sizes (1 task, 12 tasks, and the plain API) posting without pause until ``done()``;
    (status, model version) of every Label Studio answer, checked for one result per task."""
    answers: list[tuple[int, str]] = []
    stop = threading.Event()
    errors: list[str] = []

    def client(size: int) -> None:
        while not stop.is_set():
            task_list = tasks(TEXTS[:size])
            status, out = request(port, "POST", "/predict", {"tasks": task_list, "label_config": CONFIG})
            if status != 200 or len(out["results"]) != size:
                errors.append(f"{status} {out}")
            answers.append((status, out.get("model_version", "")))
            status, out = request(port, "POST", "/predict", {"texts": TEXTS[:size]})
            if status != 200:
                errors.append(f"{status} {out}")
            time.sleep(0.25)  # steady traffic that leaves the training process most of the CPU

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in (1, 12, 3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + limit
    try:
        while not done():
            assert time.monotonic() < deadline, f"the rounds did not end within {limit} s"
            time.sleep(0.5)
        time.sleep(1.0)  # a few answers from the new model too
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:3]
    return answers


def test_label_studio_options_are_checked(trained, tmp_path: Path) -> None:
    import subprocess
    import sys

    base = [sys.executable, "-m", "ner_toolkit", "serve", "--model", str(trained.model_dir), "--port", "0"]
    proc = subprocess.run(base + ["--work-dir", str(tmp_path)], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert_user_error(proc.returncode, proc.stderr, "--work-dir", "--label-studio")
    proc = subprocess.run(base + ["--label-studio", "--work-dir", str(tmp_path), "--train-set", "training.epochz=2"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert_user_error(proc.returncode, proc.stderr, "--train-set:1", "epochz")
    blocked = tmp_path / "a-file"
    blocked.write_text("", encoding="utf-8")
    proc = subprocess.run(base + ["--label-studio", "--work-dir", str(blocked / "work")], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert_user_error(proc.returncode, proc.stderr, str(blocked / "work"), "cannot create the work directory")


def test_the_client_drives_the_loop_as_label_studio_would(server: LabelStudioServer) -> None:
    from ner_toolkit.serve.labelstudio import annotation_payload
    from ner_toolkit.serve.ls_client import BackendError, Client

    client = Client(f"http://127.0.0.1:{server.port}", CONFIG, timeout=60)
    text = "Fans 😀 cheered Nadim Ladki in Bonn ."
    results = client.predict(tasks([text, ""], first_id=500))
    assert len(results) == 2 and results[1]["result"] == []
    before = client.health()["annotations"]
    number = client.start_round()  # nothing annotated on this server yet: the round fails, and says why
    with pytest.raises(BackendError, match=f"round {number} failed: no annotations"):
        client.wait_round(number, timeout=60)
    start = text.index("Nadim")
    payload = annotation_payload(500, text, [(start, start + len("Nadim Ladki"), "PER")], client.config, partial=True)
    assert payload["annotation"]["result"][0]["value"]["start"] == start + 1  # UTF-16: the emoji is two units
    assert client.annotate(payload) == {"task": 500, "kept": True, "partial": True, "new_labels": []}
    record = json.loads(Path(server.work).joinpath("annotations.jsonl").read_text().splitlines()[-1])
    assert record["entities"] == [[start, start + len("Nadim Ladki"), "PER"]] and record["partial"]
    assert client.health()["annotations"] == before + 1
