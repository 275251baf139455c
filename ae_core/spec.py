"""Framework-free model specifications.

A :class:`ModelSpec` describes an autoencoder as two ordered lists of layer specs, ``encoder`` and
``decoder``, exactly as the usual tutorial code writes them::

    self.encoder = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), ...)

Both ``ae_torch`` and ``ae_jax`` build their modules from the same spec, and the spec alone fixes the
canonical parameter names (PyTorch's ``state_dict`` keys, e.g. ``encoder.0.weight``) and their shapes
in PyTorch layout. The layer specs themselves, one registered kind each, are in :mod:`ae_core.layers`.
Nothing here imports a deep-learning framework.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from .layers import LAYER_KINDS, Activation, GaussianHead, LayerSpec, Linear, SpecError, spec_class
from .layers.registry import prod

# What a model consumes: "mnist" = flattened 28x28 digits scaled to [0, 1]; "features128" = 128-d
# feature vectors derived from the same digits (see ae_core.inputs).
# "mnist_image" = the same digits as (1, 28, 28) images, channels first (torch's NCHW).
# "mnist_rows" = the digits as sequences of 28 rows of 28 pixels, (steps, features) (LSTM models).
INPUT_KINDS = {"mnist": (784,), "features128": (128,), "mnist_image": (1, 28, 28), "mnist_rows": (28, 28)}


@dataclass(frozen=True)
class ModelSpec:
    """An autoencoder: ``decode(encode(x))`` with ``encoder`` / ``decoder`` as Sequentials.

    ``corrupt`` (denoising autoencoders): parameter-free corruption layers applied to the input in
    train mode only, before the encoder; the loss target stays the clean input.

    ``names`` (a model published under other module names): ``{layer path: torch module name}`` for
    the layers that hold state, e.g. ``{"encoder.0": "fc1", "encoder.2.mu": "fc21"}`` (pytorch/examples'
    VAE); their state-dict names follow (``fc1.weight``), so that code's saved weights load strictly,
    and the layers without state are functional ops between them, as such code writes them
    (:meth:`to_graph`). Layers not named keep ``encoder.<i>`` / ``decoder.<i>``, inside the tutorials'
    ``nn.Sequential``.
    """

    name: str
    encoder: tuple[LayerSpec, ...]
    decoder: tuple[LayerSpec, ...]
    input: str = "mnist"  # what the model eats; a key of INPUT_KINDS
    description: str = ""
    corrupt: tuple[LayerSpec, ...] = ()
    names: tuple[tuple[str, str], ...] = ()  # given as a dict; stored sorted (the spec stays hashable)

    PARTS = ("corrupt", "encoder", "decoder")

    def __post_init__(self) -> None:
        for part in self.PARTS:
            object.__setattr__(self, part, tuple(getattr(self, part)))
        names = self.names.items() if isinstance(self.names, dict) else self.names
        object.__setattr__(self, "names", tuple(sorted((str(k), str(v)) for k, v in names)))
        if self.input not in INPUT_KINDS:
            raise SpecError(f"{self.name}: unknown input kind {self.input!r}; known: {', '.join(INPUT_KINDS)}")
        if not self.encoder or not self.decoder:
            raise SpecError(f"{self.name}: encoder and decoder must each have at least one layer")
        for part in self.PARTS:
            for i, layer in enumerate(getattr(self, part)):
                self._check_layer(part, i, layer)
        code = self._propagate("encoder", self.input_shape)
        out = self._propagate("decoder", code)
        if out != self.input_shape:
            raise SpecError(f"{self.name}: decoder produces shape {out}, but the input has shape {self.input_shape}")
        self._check_names()

    def _check_names(self) -> None:
        """Each renamed path is a stateful layer (or a VAE head's ``mu`` / ``logvar``), each new name a
        dotted Python name used once, none inside another (``fc`` and ``fc.a``)."""
        paths = {f"{part}.{i}{sub}" for part, i, layer in self.layers() if layer.state_shapes()
                 for sub in ((".mu", ".logvar") if isinstance(layer, GaussianHead) else ("",))}
        new = [v for _, v in self.names]
        for old, name in self.names:
            if old not in paths:
                raise SpecError(f"{self.name}: names[{old!r}]: not a layer with state; those are "
                                f"{', '.join(sorted(paths))}")
            if not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", name) or name.split(".")[0] in ("corrupt", *self.PARTS):
                raise SpecError(f"{self.name}: names[{old!r}] = {name!r} is not a module name (dotted Python "
                                f"names, not under corrupt / encoder / decoder)")
            if new.count(name) > 1 or any(o.startswith(name + ".") for o in new):
                raise SpecError(f"{self.name}: the module name {name!r} is given twice or holds another")

    def torch_name(self, name: str) -> str:
        """A layer path or state name (``encoder.2.mu.weight``) under the model's module names
        (``fc21.weight``, :attr:`names`); unchanged where no name is given."""
        for old, new in sorted(self.names, key=lambda kv: -len(kv[0])):
            if name == old or name.startswith(old + "."):
                return new + name[len(old):]
        return name

    def _check_layer(self, part: str, i: int, layer) -> None:
        where = f"{self.name}: {part}[{i}]"
        registered = LAYER_KINDS.get(getattr(layer, "kind", None))
        if registered is None or type(layer) is not registered.spec:
            raise SpecError(f"{where} is {layer!r}, not a layer spec")
        corruptions = " / ".join(k.spec.__name__ for k in LAYER_KINDS.values() if k.spec.corruption)
        if (part == "corrupt") != layer.corruption:
            raise SpecError(f"{where}: corruption layers ({corruptions.replace(' / ', ', ')}) go in `corrupt`, "
                            f"and only there" if part != "corrupt" else
                            f"{where}: only {corruptions} may corrupt the input, got {layer}")
        try:
            layer.check_placement(self, part, i)
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from None

    def _propagate(self, part: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        for i, layer in enumerate(getattr(self, part)):
            try:
                shape = layer.out_shape(shape)
            except SpecError as e:
                raise SpecError(f"{self.name}: {part}[{i}]: {e}") from None
        return shape

    @property
    def input_shape(self) -> tuple[int, ...]:
        return INPUT_KINDS[self.input]

    @property
    def code_shape(self) -> tuple[int, ...]:
        return self._propagate("encoder", self.input_shape)

    def layers(self):
        """``(part, index, layer)`` for every layer, in execution order (corrupt, encoder, decoder)."""
        for part in self.PARTS:
            for i, layer in enumerate(getattr(self, part)):
                yield part, i, layer

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Trainable parameters: canonical names (PyTorch ``named_parameters``) -> shapes in PyTorch layout."""
        return {self.torch_name(f"{part}.{i}.{p}"): shape for part, i, layer in self.layers()
                for p, shape in layer.param_shapes().items()}

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Everything in a ``state_dict``: parameters and buffers (BatchNorm running statistics), in
        PyTorch's order (per module: parameters, then buffers)."""
        return {self.torch_name(f"{part}.{i}.{p}"): shape for part, i, layer in self.layers()
                for p, shape in layer.state_shapes().items()}

    def int_keys(self) -> set[str]:
        """State-dict entries that hold integers (``num_batches_tracked``), not floats."""
        return {self.torch_name(f"{part}.{i}.{b}") for part, i, layer in self.layers() for b in layer.int_buffers}

    def noise_shapes(self) -> dict[str, tuple[str, tuple[int, ...], float]]:
        """The random inputs one example needs in train mode: ``{layer name: (kind, shape, param)}``.

        kind "bernoulli" (param = keep probability: a 0/1 mask) or "normal" (standard normal). Shapes
        are per example, channels first. Drawn by ``ae_core.noise`` and given to both frameworks.
        """
        out, shape = {}, self.input_shape
        for part, i, layer in self.layers():
            noise = layer.noise(shape)
            if noise is not None:
                out[f"{part}.{i}"] = noise
            shape = layer.out_shape(shape)
        return out

    def has(self, *kinds: str) -> bool:
        return any(layer.kind in kinds for _, _, layer in self.layers())

    @property
    def is_vae(self) -> bool:
        return isinstance(self.encoder[-1], GaussianHead)

    @property
    def has_logits(self) -> bool:
        """The decoder ends in a Sigmoid: its input are logits (BCE from logits, the VAE's loss)."""
        return self.decoder[-1] == Activation("sigmoid")

    def num_params(self) -> int:
        return sum(prod(shape) for shape in self.param_shapes().values())

    def layer_input_shapes(self) -> list[tuple[LayerSpec, tuple[int, ...]]]:
        """Every layer of the encoder then the decoder with the (per-example) shape it receives."""
        out, shape = [], self.input_shape
        for layer in (*self.encoder, *self.decoder):
            out.append((layer, shape))
            shape = layer.out_shape(shape)
        return out

    # -- serialisation (stored in checkpoint metadata so a file says what it holds) ----------------
    def to_json(self) -> str:
        def layer(l: LayerSpec) -> dict:
            return {"kind": l.kind, **asdict(l)}

        d = {"name": self.name, "input": self.input, "description": self.description}
        # encoder and decoder are never empty; `corrupt` is written only when there is one
        d.update({part: [layer(l) for l in getattr(self, part)] for part in self.PARTS if getattr(self, part)})
        if self.names:  # written only when given: the JSON of the other specs is as it always was
            d["names"] = dict(self.names)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            d = json.loads(text)
            parts = {}
            for part in cls.PARTS:
                layers = []
                for item in d.get(part, []) if part == "corrupt" else d[part]:
                    item = dict(item)
                    layers.append(spec_class(item.pop("kind"))(**item))
                parts[part] = tuple(layers)
            return cls(name=d["name"], input=d["input"], description=d.get("description", ""),
                       names=d.get("names", {}), **parts)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
            raise SpecError(f"not a valid model spec: {e}") from None

    def same_architecture(self, other: "ModelSpec") -> bool:
        return (all(getattr(self, p) == getattr(other, p) for p in self.PARTS) and self.input == other.input
                and self.names == other.names)

    def to_graph(self):
        """The model as a graph (``ae_core.graph``): how both frameworks build and run it
        (``ae_core.lowering``)."""
        from .lowering import lower

        return lower(self)

    def describe(self, part: str) -> str:
        """The shapes one side passes through (``784-128-...`` for MLPs), with the activations named."""
        shape = self.input_shape if part == "encoder" else self.code_shape
        shapes, acts = ["x".join(map(str, shape))], []
        for layer in getattr(self, part):
            if layer.shown == "activation":
                if layer.name not in acts:
                    acts.append(layer.name)
                continue
            shape = layer.out_shape(shape)
            if layer.shown == "shape":
                shapes.append("x".join(map(str, shape)))
            elif layer.shown == "kind":
                acts.append(layer.kind)
        return "-".join(shapes) + (f" ({', '.join(acts)})" if acts else "")


def mlp(
    name: str,
    widths: list[int],
    act: str,
    *,
    code_act: str | None = None,
    out_act: str | None = None,
    input: str = "mnist",
    description: str = "",
) -> ModelSpec:
    """The tutorial MLP autoencoder: mirrored Linear stacks with ``act`` between layers.

    ``widths`` runs from the input to the code, e.g. ``[784, 128, 64, 36, 18, 9]``; the decoder mirrors
    it. ``code_act`` follows the last encoder Linear (None: the code is linear), ``out_act`` the last
    decoder Linear (None: linear output).
    """
    if len(widths) < 2:
        raise SpecError(f"{name}: an MLP needs at least two widths, got {widths}")

    def side(ws: list[int], last_act: str | None) -> list[LayerSpec]:
        layers: list[LayerSpec] = []
        for i, (a, b) in enumerate(zip(ws[:-1], ws[1:])):
            layers.append(Linear(a, b))
            is_last = i == len(ws) - 2
            if not is_last:
                layers.append(Activation(act))
            elif last_act is not None:
                layers.append(Activation(last_act))
        return layers

    return ModelSpec(
        name=name,
        encoder=tuple(side(widths, code_act)),
        decoder=tuple(side(widths[::-1], out_act)),
        input=input,
        description=description,
    )
