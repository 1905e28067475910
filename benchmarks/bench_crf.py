"""CRF speed: ner_toolkit's CRF against pytorch-crf (``torchcrf.CRF``) in one process, on the same inputs.

    python benchmarks/bench_crf.py [--reps 15] [--threads N] [--devices cpu,cuda]

For each (B, T, K) the two CRFs share parameters (ours loads pytorch-crf's ``state_dict``) and get the
same random emissions and mixed lengths (uniform in [1, T], one sentence of length T). Measured:

* decode seq/s: ``decode`` (ours returns device tensors; pytorch-crf returns Python lists, so its time
  includes that host copy; on CUDA ours is synchronised before the clock stops). On the CPU ``decode``
  runs the compiled C loop (``model/crf/native.py``) when a C compiler is present; the "torch impl"
  column is the pure PyTorch Viterbi (``model/crf/viterbi.py``, what CUDA and ``torch.compile`` run) on
  the same inputs, for comparison.
* NLL fwd+bwd seq/s: the summed NLL and ``backward()`` (gradients for emissions and parameters).
* same paths: ours (and the torch implementation) equal pytorch-crf's best paths for every sentence.
* A second table, ours only (pytorch-crf has no n-best): ``nbest`` with k=3 as users get it (the C
  k-best on the CPU) against the PyTorch k-best (``model/crf/viterbi.py``), with "same ranks: yes/no".

Timing: warm-up, then ``--reps`` rounds that alternate ours and theirs (so load changes hit both), median.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ner_toolkit.model.crf import CRF  # noqa: E402
from ner_toolkit.model.crf.viterbi import kbest as torch_kbest  # noqa: E402
from ner_toolkit.model.crf.viterbi import viterbi as torch_viterbi  # noqa: E402

try:
    import torchcrf
except ImportError:  # pragma: no cover
    sys.exit("pytorch-crf is needed for this comparison: pip install pytorch-crf")

SHAPES = [(32, 40, 9), (256, 40, 9), (256, 60, 37), (1024, 40, 9)]
NBEST_K = 3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_all(fns: list, device: torch.device, reps: int) -> list[float]:
    """Median seconds of each callable, measured in alternation after a warm-up."""
    for fn in fns + fns:
        fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            sync(device)
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def bench_shape(batch: int, seq_len: int, num_tags: int, device: torch.device, reps: int) -> dict:
    gen = torch.Generator().manual_seed(batch * 1000 + seq_len * 10 + num_tags)
    torch.manual_seed(0)
    ref = torchcrf.CRF(num_tags, batch_first=True)
    with torch.no_grad():  # trained-looking transitions instead of the near-zero init
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    ours = CRF(num_tags)
    ours.load_state_dict(ref.state_dict())
    ref.to(device)
    ours.to(device)
    emissions = (torch.randn(batch, seq_len, num_tags, generator=gen) * 3).to(device)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=gen)
    lengths[0] = seq_len
    mask = (torch.arange(seq_len).unsqueeze(0) < lengths.unsqueeze(1)).to(device)
    tags = torch.randint(0, num_tags, (batch, seq_len), generator=gen).to(device)

    inputs = ours._inference_inputs(emissions, mask)
    with torch.no_grad():
        their_paths = ref.decode(emissions, mask)
        same = True
        for paths, _ in (ours.decode(emissions, mask), torch_viterbi(*inputs)):
            listed = paths.cpu().tolist()
            same = same and all(listed[b][: int(lengths[b])] == their_paths[b] for b in range(batch))
        t_dec = time_all([lambda: ours.decode(emissions, mask), lambda: torch_viterbi(*inputs),
                          lambda: ref.decode(emissions, mask)], device, reps)

    def nll(model, sign: float):
        def run() -> None:
            em = emissions.detach().requires_grad_()
            for p in model.parameters():
                p.grad = None
            loss = sign * model(em, tags, mask, reduction="sum")
            loss.backward()

        return run

    t_nll = time_all([nll(ours, 1.0), nll(ref, -1.0)], device, reps)
    with torch.no_grad():
        got, want = ours.nbest(emissions, mask, NBEST_K), torch_kbest(*inputs, NBEST_K)
        same_k = torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        t_k = time_all([lambda: ours.nbest(emissions, mask, NBEST_K), lambda: torch_kbest(*inputs, NBEST_K)],
                       device, max(3, reps // 3))
    return {
        "nbest": tuple(batch / t for t in t_k),
        "same_k": same_k,
        "dec": tuple(batch / t for t in t_dec),
        "nll": (batch / t_nll[0], batch / t_nll[1]),
        "same": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--devices", default=None, help="comma-separated; default cpu plus cuda if available")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if args.devices:
        names = args.devices.split(",")

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, CPU threads {threads}, median of {args.reps} alternating reps")
    header = (
        f"{'device':<6} {'B':>5} {'T':>3} {'K':>3} | {'decode ours':>12} {'torch impl':>10} {'torchcrf':>10} "
        f"{'ratio':>6} | "
        f"{'NLL f+b ours':>12} {'torchcrf':>10} {'ratio':>6} | same paths"
    )
    print(header)
    print("-" * len(header))
    results = []
    for name in names:
        device = torch.device(name)
        for batch, seq_len, num_tags in SHAPES:
            r = bench_shape(batch, seq_len, num_tags, device, args.reps)
            results.append((name, batch, seq_len, num_tags, r))
            (d_ours, d_torch, d_ref), (n_ours, n_ref) = r["dec"], r["nll"]
            print(
                f"{name:<6} {batch:>5} {seq_len:>3} {num_tags:>3} | {d_ours:>12,.0f} {d_torch:>10,.0f} {d_ref:>10,.0f} "
                f"{d_ours / d_ref:>5.1f}x | {n_ours:>12,.0f} {n_ref:>10,.0f} {n_ours / n_ref:>5.1f}x | "
                f"{'yes' if r['same'] else 'NO'}"
            )
    print("(seq/s = sentences per second; higher is better)")
    print()
    header = f"{'device':<6} {'B':>5} {'T':>3} {'K':>3} | {'nbest k=3 ours':>14} {'torch impl':>10} {'ratio':>6} | same ranks"
    print(header)
    print("-" * len(header))
    for name, batch, seq_len, num_tags, r in results:
        k_ours, k_torch = r["nbest"]
        print(f"{name:<6} {batch:>5} {seq_len:>3} {num_tags:>3} | {k_ours:>14,.0f} {k_torch:>10,.0f} "
              f"{k_ours / k_torch:>5.1f}x | {'yes' if r['same_k'] else 'NO'}")


if __name__ == "__main__":
    main()
