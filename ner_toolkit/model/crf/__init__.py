"""Linear-chain conditional random field: NLL, constrained Viterbi, n-best, marginals, span probabilities.

A self-contained package (its modules import only ``torch`` and the standard library: ``module`` holds the
``CRF`` class, ``scaled`` the forward/backward recursions, ``viterbi`` best and k-best decoding, ``native``
the compiled CPU Viterbi and k-best of ``viterbi_native.c``, used by ``CRF.decode`` and ``CRF.nbest`` on
the CPU where a C compiler could build them), batched: the only Python loops run over time steps, and
nothing copies tensors to the host or branches on tensor values (the ``mask[:, 0]`` guard in
:meth:`CRF._validate` runs only for CPU tensors outside ``torch.compile``). All arithmetic is float32,
also for bf16/fp16 inputs and under autocast. Memory is O(B·T·K) plus per-step histories; no
``(B, T, K, K)`` tensor is built. Parameter names and initialisation follow pytorch-crf, so its
``state_dict`` loads unchanged; label-scheme constraints are non-persistent buffers of additive penalties.

Shapes: ``B`` sentences, ``T`` time steps, ``K`` tags. The recursions run *batch-last*, ``(T, K, B)``:
each step works on ``(K, B)`` tensors and reduces over a leading dimension, which vectorises well.
"""

from .module import CRF, DISALLOWED_PENALTY, Constraints

__all__ = ["CRF", "DISALLOWED_PENALTY", "Constraints"]
