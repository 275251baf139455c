"""A model spec as a model graph: the presets are special cases of ``ae_core.graph``.

:func:`lower` turns a :class:`~ae_core.spec.ModelSpec` into the :class:`~ae_core.graph.Graph` both
frameworks build and run (``ae_torch.models`` / ``ae_jax.models`` are graph modules of it), so a
preset, a hand-written spec and a ported torch model are built the one same way. The graph holds:

- every layer of the spec as a module node under its path (``encoder.0``... inside the tutorials'
  ``nn.Sequential``), or under its given torch name (``ModelSpec.names``), in which case the layers
  without state are the functional ops such code writes between its named layers (``F.relu``);
- a VAE's ``GaussianHead`` as what pytorch/examples writes: two Linears ``<head>.mu`` / ``<head>.logvar``
  and, in train mode, ``mu + exp(0.5 * logvar) * eps`` with ``eps`` a supplied draw named after the
  head (the key ``ae_core.noise`` gives it); in eval mode the code is ``mu``;
- the methods ``forward``, ``encode``, ``decode``, ``outputs`` (everything a loss needs: ``code``,
  ``recon``, and ``logits``, ``mu``, ``logvar`` where the model has them), ``decode_logits`` (a decoder
  ending in Sigmoid) and ``corrupt`` (a denoising model), with ``@eval`` variants for a VAE.

Node names are the layers' spec paths (``decoder.3``), so the noise of a lowered graph is keyed as the
spec's (:meth:`Graph.noise_shapes` equals :meth:`ModelSpec.noise_shapes`). Node shapes are per example
with a batch of 1.
"""

from __future__ import annotations

from dataclasses import replace

from .graph import Graph, Method, Node, Ref, normalize_args
from .layers import Activation, Dropout, Flatten, GaussianHead, LastStep, Linear, SpecError, TiedLinear, Unflatten
from .spec import ModelSpec


def _op(layer) -> tuple[str, dict] | None:
    """A layer without state as the graph op it computes (named models: functional code); None: it has no
    functional form (RepeatSteps, the corruptions)."""
    if isinstance(layer, Activation):  # relu, tanh, sigmoid, gelu (exact, the op's default), identity
        return layer.name, {}
    if isinstance(layer, Flatten):
        return "flatten", {"start_dim": 1, "end_dim": -1}
    if isinstance(layer, Unflatten):
        return "unflatten", {"dim": 1, "sizes": tuple(layer.shape)}
    if isinstance(layer, Dropout):
        return "dropout", {"p": layer.p}
    if isinstance(layer, LastStep):
        return "getitem", {"index": (slice(None, None, None), -1)}
    return None


class _Lowering:
    def __init__(self, spec: ModelSpec):
        self.spec, self.modules = spec, {}

    def side(self, part: str, h: Ref, shape: tuple[int, ...], train: bool, stop: int | None = None):
        """``part``'s layers (up to ``stop``) on ``h``: ``(nodes, output ref, shape, extra outputs)``."""
        nodes, extra = [], {}
        for i, layer in list(enumerate(getattr(self.spec, part)))[:stop]:
            name = f"{part}.{i}"
            out_shape = layer.out_shape(shape)
            if isinstance(layer, GaussianHead):
                head, extra = self.head(name, layer, h, train)
                nodes += head
            else:
                nodes.append(self.node(name, layer, h, out_shape))
            h, shape = Ref(nodes[-1].name), out_shape
        return nodes, h, shape, extra

    def node(self, name: str, layer, h: Ref, out_shape) -> Node:
        op = _op(layer) if self.spec.names and not layer.state_shapes() else None
        if op is not None:
            return Node(name, op[0], name, (), normalize_args(op[0], (), {"input": h, **op[1]}), (1, *out_shape))
        if self.spec.names and not layer.state_shapes():
            raise SpecError(f"{self.spec.name}: {name} ({layer}) has no functional form for a model with "
                            f"module names")
        path = self.spec.torch_name(name)
        if isinstance(layer, TiedLinear):  # its source under the source's torch name
            layer = replace(layer, tied_to=self.spec.torch_name(layer.tied_to))
        self.modules[path] = layer
        return Node(name, "module", path, (h,), {}, (1, *out_shape))

    def head(self, name: str, layer: GaussianHead, h: Ref, train: bool):
        """pytorch/examples' ``reparameterize``: ``mu + exp(0.5 * logvar) * eps`` (train), ``mu`` (eval)."""
        shape = (1, layer.latent)
        nodes = []
        for which in ("mu", "logvar"):
            path = self.spec.torch_name(f"{name}.{which}")
            self.modules[path] = Linear(layer.in_features, layer.latent)
            nodes.append(Node(f"{name}.{which}", "module", path, (h,), {}, shape))
        mu, logvar = Ref(f"{name}.mu"), Ref(f"{name}.logvar")
        if train:
            nodes += [Node(f"{name}.half_logvar", "mul", name, (), {"input": logvar, "other": 0.5}, shape),
                      Node(f"{name}.std", "exp", name, (), {"input": Ref(f"{name}.half_logvar")}, shape),
                      Node(name, "randn_like", name, (), {"input": Ref(f"{name}.std")}, shape),
                      Node(f"{name}.scaled", "mul", name, (), {"input": Ref(f"{name}.std"), "other": Ref(name)}, shape),
                      Node(f"{name}.z", "add", name, (), {"input": mu, "other": Ref(f"{name}.scaled"), "alpha": 1},
                           shape)]
        else:
            nodes.append(Node(f"{name}.z", "identity", name, (), {"input": mu}, shape))
        return nodes, {"mu": mu, "logvar": logvar}

    def methods(self, train: bool) -> dict[str, Method]:
        spec, x = self.spec, Ref("x")
        corrupt, h, shape, _ = self.side("corrupt", x, spec.input_shape, train)
        enc, code, code_shape, stats = self.side("encoder", h, shape, train)
        dec, recon, _, _ = self.side("decoder", code, code_shape, train)
        enc_only, code_only, _, _ = self.side("encoder", x, spec.input_shape, train)
        dec_z, recon_z, _, _ = self.side("decoder", Ref("z"), code_shape, train)
        out = {"code": code}
        if spec.has_logits:
            out["logits"] = Ref(dec[-2].name) if len(dec) > 1 else code
        out["recon"] = recon
        out.update(stats)
        methods = {"forward": Method(("x",), tuple(corrupt + enc + dec), recon),
                   "encode": Method(("x",), tuple(enc_only), code_only),
                   "decode": Method(("z",), tuple(dec_z), recon_z),
                   "outputs": Method(("x",), tuple(corrupt + enc + dec), out)}
        if spec.has_logits:
            logits, last, _, _ = self.side("decoder", Ref("z"), code_shape, train, stop=-1)
            methods["decode_logits"] = Method(("z",), tuple(logits), last)
        if spec.corrupt:
            methods["corrupt"] = Method(("x",), tuple(corrupt), h)
        return methods


def lower(spec: ModelSpec) -> Graph:
    """``spec`` as a model graph (see the module docstring)."""
    lowering = _Lowering(spec)
    methods = lowering.methods(train=True)
    if spec.is_vae:  # the code is the mean in eval mode: the methods through the head differ by mode
        methods.update({f"{m}@eval": meth for m, meth in lowering.methods(train=False).items()
                        if m in ("forward", "encode", "outputs")})
    # modules in the order forward first met them: the spec's (corrupt, encoder, decoder), the state dict's
    return Graph(spec.name, lowering.modules, methods, tuple(spec.input_shape), "float32")
