"""Recurrent layer kinds: LSTM and GRU, torch's gate orders, zero or given initial state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .registry import LayerSpec, SpecError, layer_kind, positive_ints, torch_default_init

MAX_LAYERS = 8  # stacked layers a recurrent spec may have (the NNX side names each layer's variables)


@dataclass(frozen=True)
class _Recurrent(LayerSpec):
    """``torch.nn.LSTM`` / ``nn.GRU`` (unidirectional, no dropout between layers).

    Parameters in torch's layout, per layer ``l``: weight_ih_l<l> (G*H, in) -- ``in`` is input_size for
    layer 0, hidden_size above --, weight_hh_l<l> (G*H, H) and, with ``bias``, BOTH biases bias_ih_l<l>,
    bias_hh_l<l> (G*H,), G the number of gates. ``batch_first``: (N, steps, features), else
    (steps, N, features). ``returns_state=False`` (the presets' layer): the output sequence only;
    True: torch's own return value, ``(output, h_n)`` for a GRU, ``(output, (h_n, c_n))`` for an LSTM.
    Called with an initial state as torch's second argument, or with none (zeros).
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = True
    returns_state: bool = False

    gates: ClassVar[int]
    shown = "shape"

    def __post_init__(self) -> None:
        positive_ints(self, "input_size", "hidden_size", "num_layers")
        if self.num_layers > MAX_LAYERS:
            raise SpecError(f"{type(self).__name__}.num_layers must be at most {MAX_LAYERS}, got {self.num_layers}")
        for name in ("bias", "batch_first", "returns_state"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"{type(self).__name__}.{name} must be a bool, got {getattr(self, name)!r}")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        g, h = self.gates * self.hidden_size, self.hidden_size
        shapes = {}
        for layer in range(self.num_layers):
            shapes[f"weight_ih_l{layer}"] = (g, self.input_size if layer == 0 else h)
            shapes[f"weight_hh_l{layer}"] = (g, h)
            if self.bias:
                shapes[f"bias_ih_l{layer}"] = (g,)
                shapes[f"bias_hh_l{layer}"] = (g,)
        return shapes

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 2 or in_shape[1] != self.input_size:
            raise SpecError(f"{self} gets input of shape {in_shape}, expected (steps, {self.input_size})")
        return (in_shape[0], self.hidden_size)

    def check_placement(self, spec, part: str, index: int) -> None:
        if self.returns_state or not self.batch_first:
            raise SpecError(f"{self}: a model spec's recurrent layer takes (N, steps, features) and returns the "
                            f"output sequence (batch_first=True, returns_state=False)")

    @property
    def fan_in(self) -> int:  # torch: U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) for every tensor
        return self.hidden_size

    def macs(self, in_shape: tuple[int, ...]) -> int:
        h = self.hidden_size
        return in_shape[0] * self.gates * h * (self.input_size + h + (self.num_layers - 1) * 2 * h)


@layer_kind(init=torch_default_init, example=dict(input_size=3, hidden_size=2), example_input=(4, 3),
            hints={"LSTM": "LSTM: gate order i, f, g, o, and torch's TWO biases b_ih + b_hh (Flax cells have one) "
                           "(pitfall 9); nn.LSTM is batch_first=False unless told, and returns (output, (h_n, c_n)) "
                           "with h_n, c_n (num_layers, N, H)"})
@dataclass(frozen=True)
class LSTM(_Recurrent):
    """``torch.nn.LSTM``: gates (i, f, g, o); ``c = f * c + i * g``, ``h = o * tanh(c)`` (see :class:`_Recurrent`).

    The presets' layer is ``LSTM(input_size, hidden_size)``: one layer, batch_first, the output sequence
    (N, steps, hidden) only."""

    kind = "lstm"
    gates = 4


@layer_kind(init=torch_default_init, example=dict(input_size=3, hidden_size=2, num_layers=2, returns_state=True),
            example_input=(4, 3),
            hints={"GRU": "GRU: gate order r, z, n, and torch's n = tanh(W_in x + b_in + r * (W_hn h + b_hn)): the "
                          "reset gate multiplies the hidden part WITH its bias, then h = (1 - z) * n + z * h; "
                          "two biases per gate (Flax's GRUCell differs in both); returns (output, h_n)"})
@dataclass(frozen=True)
class GRU(_Recurrent):
    """``torch.nn.GRU``: gates (r, z, n); ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``,
    ``h = n + z * (h - n)`` (see :class:`_Recurrent`)."""

    kind = "gru"
    gates = 3
