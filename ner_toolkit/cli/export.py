"""``ner export`` (``ner-export``): write an ONNX export of a trained model (emission graph + CRF + vocabularies
+ tokenizer), loadable without torch by ``ner_toolkit.export.OnnxPredictor``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import UserError
from ..extras import require
from .common import Parser, checked_threads, model_options, threads_options


def _parser(prog: Optional[str] = None) -> Parser:
    from ..export.onnx_export import QUANTIZE

    p = Parser(prog=prog, description="Export a trained model to ONNX, for prediction without PyTorch.",
               parents=[model_options(), threads_options()])
    p.add_argument("--output", required=True, help="export directory to write (replaced whole if it exists)")
    p.add_argument("--quantize", choices=QUANTIZE,
                   help="also write model.int8.onnx (dynamic int8 weights of MatMul/Gemm/LSTM/Attention); the "
                        "runtime then loads it by default")
    return p


def run(argv: list[str], prog: Optional[str] = None) -> int:
    require("export", prog or "ner export")  # before the parser: --help says the same line
    args = _parser(prog).parse_args(argv)
    from ..model.directory import resolve_model_dir
    from ..paths import Read, Write, check_no_clash

    threads_wanted = checked_threads(args)
    model_dir = resolve_model_dir(args.model)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UserError("--output must be a directory (a file of that name exists); choose another path", output)
    if output.is_dir() and any(output.iterdir()) and not (output / "export.json").is_file():
        raise UserError("--output is a directory that is not an export; it would be replaced whole: choose an "
                        "empty or new path", output)
    check_no_clash([Read("the model directory", model_dir, tree=True)], [Write("--output", output, tree=True)])
    from .. import threads
    from ..export.onnx_export import export_model

    threads.apply(threads_wanted)

    summary = export_model(model_dir, output, args.quantize, trust_remote_code=args.trust_remote_code)
    sizes = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in summary["sizes"].items())
    check = f"max |diff| vs PyTorch {summary['max_abs_diff_fp32']:.1e} fp32"
    if summary["max_abs_diff_int8"] is not None:
        check += f", {summary['max_abs_diff_int8']:.1e} int8"
    print(f"{model_dir} -> {output}: {summary['labels']} labels, {sizes}; {check}; default graph {summary['graph']}")
    return 0
