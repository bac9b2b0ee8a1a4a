"""Recurrent models: RNN / LSTM / GRU classifiers (uni-, bidirectional, packed), Seq2Seq and a forecaster."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from sciml_bench.models.registry import cross_entropy, mse, register_model
from sciml_bench.data.fields import damped_oscillator

_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentClassifier(nn.Module):
    """A stacked recurrent net over (B, T, in) whose final hidden state(s) feed a linear head.

    Bidirectional nets concatenate the last layer's forward and backward final states. With
    ``lengths`` the input is packed (``enforce_sorted=False``), so padding never enters the state.
    """

    def __init__(self, cell: str = "lstm", in_features: int = 10, width: int = 64, depth: int = 2,
                 num_classes: int = 5, bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.rnn = _CELLS[cell](in_features, width, depth, batch_first=True, bidirectional=bidirectional,
                                dropout=dropout if depth > 1 else 0.0)
        self.dirs = 2 if bidirectional else 1
        self.head = nn.Linear(width * self.dirs, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:  # -> (B, classes)
        if lengths is not None:  # pack_padded_sequence needs the lengths on the CPU
            x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h  # LSTM returns (h_n, c_n); h_n: (layers * dirs, B, width)
        return self.head(torch.cat(list(h[-self.dirs:]), -1))


class Seq2Seq(nn.Module):
    """LSTM encoder-decoder with teacher forcing: the decoder reads the shifted ground truth in one
    call (no Python loop in training), starting from the encoder's final (h, c)."""

    def __init__(self, in_features: int = 10, out_features: int = 1, width: int = 64, depth: int = 2):
        super().__init__()
        self.encoder = nn.LSTM(in_features, width, depth, batch_first=True)
        self.decoder = nn.LSTM(out_features, width, depth, batch_first=True)
        self.head = nn.Linear(width, out_features)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:  # -> (B, T_out, out)
        _, state = self.encoder(src)
        y, _ = self.decoder(tgt_in, state)
        return self.head(y)


class Forecaster(nn.Module):
    """LSTM forecaster: encodes a history (B, T, 1), then rolls out ``horizon`` steps autoregressively,
    feeding each prediction back as the next input. Returns (B, horizon, 1)."""

    def __init__(self, in_features: int = 1, width: int = 64, depth: int = 2, horizon: int = 20):
        super().__init__()
        self.lstm = nn.LSTM(in_features, width, depth, batch_first=True)
        self.head = nn.Linear(width, in_features)
        self.horizon = horizon

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        y, state = self.lstm(history)
        step = self.head(y[:, -1:])  # (B, 1, in)
        out = [step]
        for _ in range(self.horizon - 1):
            y, state = self.lstm(step, state)
            step = self.head(y)
            out.append(step)
        return torch.cat(out, 1)


def _create_rnn(cell: str, seq_len: int = 50, **kwargs) -> RecurrentClassifier:
    return RecurrentClassifier(cell, **kwargs)


def sequence_batch(batch_size: int, g: torch.Generator, seq_len: int = 50, in_features: int = 10,
                   num_classes: int = 5, **_):
    """Sequences (B, T, in) in N(0, 1); the label is the feature (of the first ``num_classes``) with the largest sum."""
    x = torch.randn(batch_size, seq_len, in_features, generator=g)
    return x, x[..., :num_classes].sum(1).argmax(1)


def packed_batch(batch_size: int, g: torch.Generator, seq_len: int = 50, in_features: int = 10,
                 num_classes: int = 5, **_):
    """Zero-padded variable-length sequences ((B, T, in), lengths (B,) int64 in [T/4, T]) and labels."""
    lengths = torch.randint(max(1, seq_len // 4), seq_len + 1, (batch_size,), generator=g)
    lengths[0] = seq_len  # the padded width is the longest sequence
    x = torch.randn(batch_size, seq_len, in_features, generator=g)
    x = x * (torch.arange(seq_len)[None, :, None] < lengths[:, None, None])
    return (x, lengths), x[..., :num_classes].sum(1).argmax(1)


def seq2seq_batch(batch_size: int, g: torch.Generator, seq_len: int = 50, in_features: int = 10,
                  horizon: int = 20, **_):
    """Source (B, T, in); target: the first feature's last ``horizon`` steps reversed (B, H, 1), and the
    teacher-forcing decoder input, the target shifted right by one with a zero start token."""
    src = torch.randn(batch_size, seq_len, in_features, generator=g)
    tgt = src[:, -horizon:, :1].flip(1)
    tgt_in = torch.cat((torch.zeros_like(tgt[:, :1]), tgt[:, :-1]), 1)
    return (src, tgt_in), tgt.contiguous()


def oscillator_batch(batch_size: int, g: torch.Generator, seq_len: int = 50, horizon: int = 20, **_):
    """Damped-oscillator histories (B, T, 1) and the next ``horizon`` exact values (B, H, 1), dt = 0.1."""
    x = damped_oscillator(batch_size, seq_len + horizon, g)
    return x[:, :seq_len].contiguous(), x[:, seq_len:].contiguous()


_RNN_KNOBS = ("seq_len", "width", "depth")
_CLS = dict(family="rnn", task="sequence", batch=sequence_batch, loss=cross_entropy, defaults=dict(seq_len=50),
            knobs=_RNN_KNOBS)


@register_model(**_CLS)
def rnn(**kwargs) -> RecurrentClassifier:
    """Elman RNN (tanh) classifier: input 10, hidden 64, 2 layers, 5 classes."""
    return _create_rnn("rnn", **kwargs)


@register_model(**_CLS)
def lstm(**kwargs) -> RecurrentClassifier:
    """LSTM classifier: input 10, hidden 64, 2 layers, 5 classes."""
    return _create_rnn("lstm", **kwargs)


@register_model(**_CLS)
def gru(**kwargs) -> RecurrentClassifier:
    """GRU classifier: input 10, hidden 64, 2 layers, 5 classes."""
    return _create_rnn("gru", **kwargs)


@register_model(**_CLS)
def lstm_bidirectional(**kwargs) -> RecurrentClassifier:
    """Bidirectional LSTM classifier: input 10, hidden 64 per direction, 2 layers."""
    return _create_rnn("lstm", bidirectional=True, **kwargs)


@register_model(**_CLS)
def gru_bidirectional(**kwargs) -> RecurrentClassifier:
    """Bidirectional GRU classifier: input 10, hidden 64 per direction, 2 layers."""
    return _create_rnn("gru", bidirectional=True, **kwargs)


@register_model(**dict(_CLS, batch=packed_batch))
def lstm_packed(**kwargs) -> RecurrentClassifier:
    """LSTM classifier over packed variable-length sequences (lengths T/4..T): input 10, hidden 64, 2 layers."""
    return _create_rnn("lstm", **kwargs)


@register_model(family="rnn", task="sequence", batch=seq2seq_batch, loss=mse, defaults=dict(seq_len=50),
                knobs=_RNN_KNOBS)
def lstm_seq2seq(seq_len: int = 50, **kwargs) -> Seq2Seq:
    """LSTM Seq2Seq with teacher forcing: input 10, hidden 64, 2 layers, 20-step output."""
    return Seq2Seq(**kwargs)


@register_model(family="rnn", task="regression", batch=oscillator_batch, loss=mse, defaults=dict(seq_len=50),
                knobs=_RNN_KNOBS)
def lstm_forecaster(seq_len: int = 50, **kwargs) -> Forecaster:
    """LSTM forecaster: input 1, hidden 64, 2 layers, 20-step autoregressive horizon (damped oscillator)."""
    return Forecaster(**kwargs)
