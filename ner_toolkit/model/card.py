"""The model card: README.md of a model directory, built from plain data.

:func:`build_card` is a pure function of JSON-like values (the resolved config as a mapping, labels.json,
metrics.json and the run's provenance from :func:`training_info`), so it is tested without a model. The
card has Hugging Face-style YAML front matter (``library_name: ner_toolkit``), says what the model tags
and in which schemes, how raw text is split into words, which encoder and data it was trained from, the
key settings, the dev/test scores with the commands that produced and reproduce them, and how to use it.
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

__all__ = ["CARD", "build_card", "front_matter", "training_info", "command_line"]

CARD = "README.md"
TAGS = ("token-classification", "ner", "ner_toolkit", "bilstm-crf")
MICRO = ("precision", "recall", "f1")  # the span scores a model-index reports, micro-averaged
HUB_SPLITS = {"dev": "validation", "test": "test"}  # the Hub's split names
EXAMPLE_TEXT = "EU rejects German call to boycott British lamb. Peter Blackburn reported from Brussels."


def command_line(argv: Sequence[str]) -> list[str]:
    """The command as the user typed it: ``python train.py ...`` for a script, the entry point otherwise."""
    argv = [str(a) for a in argv]
    if argv and argv[0].endswith(".py"):
        return ["python", *argv]
    if argv:
        argv[0] = os.path.basename(argv[0])  # ner-train: the console script, not its install path
    return argv


def training_info(argv: Sequence[str], data: Mapping[str, Any], fingerprints: Mapping[str, Mapping]) -> dict:
    """The run's provenance as plain data: the command line and each data file with its counts and sha256.

    ``data``: split name (train, dev, test) -> an object with ``path`` and ``tokens`` (sentences of tokens), or
    None; ``fingerprints``: ``{"data.train": {"size", "sha256"}, ...}`` (``training/fingerprint.py``).
    """
    files = {}
    for split, labelled in data.items():
        if labelled is None:
            continue
        fingerprint = fingerprints.get(f"data.{split}") or {}
        files[split] = {"path": str(labelled.path), "sentences": len(labelled.tokens),
                        "tokens": sum(len(sentence) for sentence in labelled.tokens),
                        "bytes": fingerprint.get("size"), "sha256": fingerprint.get("sha256")}
    return {"command": command_line(argv), "data": files}


def _cell(value: Any) -> str:
    """A value as a markdown table cell (no pipe or newline breaks the row)."""
    return " ".join(str(value).replace("|", "\\|").splitlines())


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "-"


def _inline(value: Any) -> str:
    """A short value in backticks (JSON for mappings and lists, as they read in YAML flow style)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.splitlines())
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _types(labels: Sequence[str]) -> list[str]:
    return sorted({label.split("-", 1)[1] for label in labels if label != "O" and "-" in label})


def front_matter(name: str, metrics: Optional[Mapping[str, Any]] = None,
                 files: Optional[Mapping[str, Any]] = None, data: Optional[Mapping[str, Any]] = None) -> dict:
    """The card's YAML front matter as data, the fields the Hugging Face Hub reads: ``library_name``,
    ``tags``, ``pipeline_tag`` and, once dev or test is scored, ``metrics`` and a ``model-index`` with
    the micro span P/R/F1 (percent, as the card shows them) of each scored file. No ``language`` or
    ``license``: the toolkit knows neither (the card asks for a license before publishing).

    ``name``: the model's name; ``metrics``: metrics.json; ``files``: :func:`training_info`'s ``data``;
    ``data``: the config's data section (the file paths when ``files`` is unknown)."""
    metrics, files, data = metrics or {}, files or {}, data or {}
    meta: dict[str, Any] = {"library_name": "ner_toolkit", "tags": list(TAGS), "pipeline_tag": "token-classification"}
    scored = [split for split in ("dev", "test") if metrics.get(split)]
    if not scored:
        return meta
    meta["metrics"] = list(MICRO)
    results = []
    for split in scored:
        micro = metrics[split].get("micro") or {}
        file_name = Path(str((files.get(split) or {}).get("path") or data.get(split) or split)).name
        results.append({"task": {"type": "token-classification", "name": "Named-entity recognition"},
                        "dataset": {"type": file_name, "name": file_name, "split": HUB_SPLITS[split]},
                        "metrics": [{"type": key, "value": round(100 * micro[key], 2), "name": f"span {key} (micro)"}
                                    for key in MICRO if isinstance(micro.get(key), (int, float))]})
    meta["model-index"] = [{"name": name, "results": results}]
    return meta


def _front_matter_lines(meta: Mapping[str, Any]) -> list[str]:
    """``meta`` between ``---`` lines, dumped by PyYAML (quoting whatever a name or path needs)."""
    text = yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    return ["---", *text.rstrip("\n").splitlines(), "---"]


def _encoder_lines(encoder: Mapping[str, Any]) -> list[str]:
    if encoder.get("name_or_path"):
        lines = [f"- Encoder: pretrained {_inline(encoder['name_or_path'])} (fine-tuned"
                 + (", frozen" if encoder.get("freeze") else "") + "), with its own tokenizer."]
    else:
        lines = [f"- Encoder: a randomly initialised ALBERT trained from scratch, config "
                 f"{_inline(encoder.get('scratch') or {})}; subword tokenizer {_inline(encoder.get('tokenizer'))}."]
    details = [f"pooling {_inline(encoder.get('pooling', 'first'))}"]
    if encoder.get("layers"):
        details.append(f"layers {_inline(encoder['layers'])}")
    if encoder.get("max_length"):
        details.append(f"windows of {encoder['max_length']} subwords (stride {encoder.get('stride')})")
    if encoder.get("context"):
        details.append(f"document context of {encoder['context']} subwords each side")
    lines.append(f"- Subwords to words: {', '.join(details)}.")
    return lines


def _architecture(model: Mapping[str, Any]) -> str:
    parts = ["the encoder's word vectors"]
    fusion = model.get("fusion", "concat")
    if fusion != "none":
        words = model.get("words") or {}
        parts.append(f"word embeddings (dim {words.get('dim')}" + (", pretrained vectors" if words.get("vectors")
                                                                   else "") + ")")
        if (model.get("chars") or {}).get("enabled"):
            parts.append("a character CNN")
    text = " + ".join(parts) + (f" ({fusion} fusion)" if len(parts) > 1 else "")
    lstm = model.get("lstm") or {}
    if lstm.get("enabled", True):
        text += f" -> BiLSTM ({lstm.get('num_layers', 1)} x {lstm.get('hidden_size')} per direction)"
    decoder = model.get("decoder", "crf")
    text += " -> CRF" if decoder == "crf" else " -> softmax (decoded under the scheme's constraints)"
    return text


def _settings(config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    data, model, training = (config.get(k) or {} for k in ("data", "model", "training"))
    rows: list[tuple[str, Any]] = [
        ("data.tag_scheme", data.get("tag_scheme")), ("data.word_tokenizer", data.get("word_tokenizer")),
        ("model.fusion", model.get("fusion")), ("model.dropout", model.get("dropout")),
        ("model.decoder", model.get("decoder")),
        ("training.epochs", training.get("epochs")), ("training.batch_size", training.get("batch_size")),
        ("training.lr", training.get("lr")), ("training.weight_decay", training.get("weight_decay")),
        ("training.warmup", training.get("warmup")), ("training.patience", training.get("patience")),
        ("training.precision", training.get("precision")), ("training.seed", training.get("seed")),
    ]
    for key in ("batch_tokens", "micro_batch_subwords", "ema"):
        if training.get(key):
            rows.append((f"training.{key}", training[key]))
    if training.get("accumulate", 1) != 1:
        rows.append(("training.accumulate", training["accumulate"]))
    return rows


def _scores(split: str, result: Mapping[str, Any]) -> list[str]:
    micro = result.get("micro") or {}
    lines = [f"**{split}**: {result.get('sentences', '?')} sentences, {micro.get('support', '?')} entities "
             f"({result.get('mode', 'conlleval')} span matching, {result.get('scheme', '?')} tags).", "",
             "| type | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |",
             f"| **micro avg** | {_pct(micro.get('precision'))} | {_pct(micro.get('recall'))} | "
             f"{_pct(micro.get('f1'))} | {micro.get('support', '')} |"]
    macro = result.get("macro")
    if macro:
        lines.append(f"| macro avg | {_pct(macro.get('precision'))} | {_pct(macro.get('recall'))} | "
                     f"{_pct(macro.get('f1'))} | |")
    for name, row in sorted((result.get("per_type") or {}).items()):
        lines.append(f"| {_cell(name)} | {_pct(row.get('precision'))} | {_pct(row.get('recall'))} | "
                     f"{_pct(row.get('f1'))} | {row.get('support', '')} |")
    return lines + [""]


def build_card(config: Mapping[str, Any], labels: Mapping[str, Any], metrics: Optional[Mapping[str, Any]] = None,
               training: Optional[Mapping[str, Any]] = None, directory: Optional[str] = None) -> str:
    """The README.md text of a model directory.

    ``config``: the resolved experiment config as a mapping (config.yaml); ``labels``: labels.json;
    ``metrics``: metrics.json (None or without test while training runs); ``training``: :func:`training_info`
    (None: provenance unknown); ``directory``: how commands name the model directory (default ``MODEL_DIR``).
    """
    data = config.get("data") or {}
    model = config.get("model") or {}
    label_list = list(labels.get("labels") or [])
    types = _types(label_list)
    tag_scheme, output_scheme = labels.get("tag_scheme"), labels.get("output_scheme")
    word_tokenizer = data.get("word_tokenizer")
    where = directory or "MODEL_DIR"
    quoted = shlex.quote(where)
    metrics = metrics or {}
    files = dict((training or {}).get("data") or {})
    name = Path(where).name if directory else "ner_toolkit model"
    if name == "model" and directory:
        name = Path(where).parent.name or name

    out = _front_matter_lines(front_matter(name, metrics, files, data))
    out += ["", f"# {name}: named-entity tagger (ner_toolkit)", "",
            f"A sequence labeller trained with ner_toolkit ({_architecture(model)}). "
            f"It tags {len(types)} entity type{'s' if len(types) != 1 else ''}: "
            + (", ".join(f"**{_cell(t)}**" for t in types) or "none") + ".", "",
            "This is **not a transformers model**: `transformers.pipeline(...)` and `AutoModel.from_pretrained` "
            "refuse this directory (its top-level `config.json` is a marker naming ner_toolkit). "
            "Load it with ner_toolkit, as below.", ""]

    out += ["## Labels and schemes", "",
            f"- Entity types: {', '.join(_inline(t) for t in types) or 'none'}.",
            f"- Output scheme: predictions are written in **{output_scheme}**, the scheme of the training files "
            f"(`--format` of predict.py also writes spans, JSONL and HF-style entities).",
            f"- Internal scheme: the decoder works in **{tag_scheme}** over {len(label_list)} labels "
            f"({', '.join(_inline(label) for label in label_list)}); illegal tag sequences are never predicted.",
            f"- Raw text is split into words with the **{word_tokenizer}** word tokeniser "
            f"(`data.word_tokenizer`, used by `predict_text` and `--input-format text`; "
            f"pre-tokenised input is taken as it is).", ""]

    out += ["## Usage", "", "```python", "from ner_toolkit.predict import Predictor", "",
            f"tagger = Predictor.load({where!r})",
            f"for entity in tagger.predict_text({EXAMPLE_TEXT!r}):",
            "    print(entity.label, entity.start, entity.end, entity.text, round(entity.score, 3))",
            f"tagger.predict([[\"EU\", \"rejects\", \"German\", \"call\"]])  # token lists -> {output_scheme} tags",
            "```", "", "```bash",
            f"python predict.py --model {quoted} input.conll --output tagged.conll   # CoNLL in, CoNLL out",
            f"echo {shlex.quote(EXAMPLE_TEXT)} | python predict.py --model {quoted} --input-format text "
            f"--format hf -",
            "```", "",
            "`--model` also takes a Hugging Face Hub repo id (`--model org/name`, `org/name@revision`) once the "
            "repo is in the local HF cache (`hf download org/name`); `HF_HUB_OFFLINE=1` keeps it offline.", ""]

    out += ["## Model", ""] + _encoder_lines(model.get("encoder") or {}) + [
        f"- Tagger: {_architecture(model)}.",
        "- Files: `model.safetensors` (all weights, encoder included), `encoder/config.json` (the encoder's HF "
        "config), the tokenizer files, `word_vocab.txt`, `labels.json`, `config.yaml` (the full resolved "
        "training config), `metrics.json`. Loading needs no network and never unpickles.", ""]

    out += ["## Training data", ""]
    if files:
        out += ["| split | file | sentences | tokens | sha256 |", "| --- | --- | ---: | ---: | --- |"]
        for split in ("train", "dev", "test"):
            info = files.get(split)
            if info:
                out.append(f"| {split} | `{_cell(Path(str(info.get('path'))).name)}` | {info.get('sentences')} | "
                           f"{info.get('tokens')} | `{_cell(info.get('sha256') or '-')}` |")
        out += ["", "Paths as given to training: "
                + "; ".join(f"{split} {_inline(files[split].get('path'))}" for split in ("train", "dev", "test")
                            if files.get(split)) + "."]
    else:
        out += ["Files: " + ", ".join(f"{split} {_inline(data.get(split))}" for split in ("train", "dev", "test")
                                      if data.get(split)) + " (counts and checksums not recorded)."]
    out += [""]

    out += ["## Training", ""]
    command = (training or {}).get("command")
    if command:
        out += ["Trained with:", "", "```bash", shlex.join(map(str, command)), "```", ""]
    out += ["Key settings. The full resolved config is `config.yaml` in this directory "
            "(`python train.py --config config.yaml --output-dir NEW_DIR` trains the same model again, run from "
            "where the data paths below resolve):", "",
            "| setting | value |", "| --- | --- |"]
    out += [f"| `{key}` | {_cell(_inline(value))} |" for key, value in _settings(config)]
    out += [""]

    out += ["## Evaluation", ""]
    scored = [split for split in ("dev", "test") if metrics.get(split)]
    if scored:
        epoch = metrics.get("epoch")
        head = "Span scores of the saved weights"
        if metrics.get("dev") and epoch:
            head += f" (epoch {epoch}, the best dev F1)"
        out += [head + ", in percent (`metrics.json` holds them in full):", ""]
        for split in scored:
            out += _scores(split, metrics[split])
        calibration = metrics.get("calibration")
        if isinstance(calibration, Mapping) and isinstance(calibration.get("temperature"), (int, float)):
            line = (f"Confidences (span and token probabilities) are calibrated: temperature "
                    f"{calibration['temperature']:.3f} fitted on dev (`calibration.json`); expected calibration "
                    f"error of the predicted spans on dev {_pct(calibration.get('ece_before'))}% before, "
                    f"{_pct(calibration.get('ece_after'))}% after")
            if "test_ece_after" in calibration:
                line += (f"; on test {_pct(calibration.get('test_ece_before'))}% before, "
                         f"{_pct(calibration.get('test_ece_after'))}% after")
            out += [line + ".", ""]
        if metrics.get("test") is None:
            out += ["Test scores are written at the end of training (no test file, or training still running).", ""]
        test_path = (files.get("test") or {}).get("path") or data.get("test")
        if test_path and metrics.get("test"):
            out += ["Reproduce the test score (from the directory training ran in):", "", "```bash",
                    f"python predict.py --model {quoted} {shlex.quote(str(test_path))} --evaluate", "```", ""]
    else:
        out += ["No scores yet: dev and test scores are written here at the end of training.", ""]

    out += ["## Limitations and license", "",
            "- Trained on the files above only: expect lower scores on other domains, genres, languages and "
            "tokenisation conventions, and no entity types beyond those listed.",
            "- Words the model never saw in training fall back to the subword encoder"
            + (" and characters" if (model.get("chars") or {}).get("enabled") else "") + "; scores on the dev "
            "and test files are no promise for other text.",
            "- License: not set by ner_toolkit. The weights derive from the training data and the encoder, whose "
            "terms apply (CoNLL-2003, for one, may not be redistributed); add a `license:` to the front matter "
            "before publishing.", ""]
    return "\n".join(out)
