"""The unpacked BiLSTM equals a packed bidirectional nn.LSTM at every valid position."""
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ner_toolkit.model.bilstm import BiLSTM, reverse_index


def _packed_reference(model: BiLSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    layers = len(model.forward_layers)
    ref = torch.nn.LSTM(x.shape[2], model.forward_layers[0].hidden_size, num_layers=layers, batch_first=True,
                        bidirectional=True)
    with torch.no_grad():
        for layer in range(layers):
            for suffix, lstm in (("", model.forward_layers[layer]), ("_reverse", model.backward_layers[layer])):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{name}_l{layer}{suffix}").copy_(getattr(lstm, f"{name}_l0"))
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=x.shape[1])[0]


def test_matches_packed_lstm_on_mixed_lengths() -> None:
    torch.manual_seed(0)
    for layers in (1, 2):
        model = BiLSTM(7, 5, num_layers=layers).eval()
        lengths = torch.tensor([6, 1, 4, 6, 2])
        x = torch.randn(5, 6, 7)
        ours = model(x, lengths)
        ref = _packed_reference(model, x, lengths)
        mask = torch.arange(6)[None, :] < lengths[:, None]
        assert ours.shape == (5, 6, 10)
        assert torch.allclose(ours[mask], ref[mask], atol=1e-6)


def test_output_does_not_depend_on_padding() -> None:
    torch.manual_seed(1)
    model = BiLSTM(3, 4).eval()
    x = torch.randn(1, 3, 3)
    alone = model(x, torch.tensor([3]))
    padded = model(torch.cat([x, torch.randn(1, 5, 3)], dim=1), torch.tensor([3]))
    assert torch.allclose(alone, padded[:, :3], atol=1e-6)


def test_reverse_index_reverses_within_length() -> None:
    assert reverse_index(torch.tensor([3, 1]), 4).tolist() == [[2, 1, 0, 3], [0, 1, 2, 3]]
