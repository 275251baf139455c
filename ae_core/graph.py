"""A model as a named graph: framework-free, JSON-serialisable, built by both frameworks.

A :class:`Graph` is what a traced PyTorch module becomes (``ae_torch.graph.trace``) and what
``ae_jax.graph.build`` turns into a native NNX module:

- ``modules``: the layers that hold state, by their torch module path (``conv1``, ``encoder.0.0``,
  ``fc_mu``), each a registered layer spec (``ae_core.layers``) -- so the parameter names and shapes
  of the graph are exactly the torch model's ``state_dict`` (:meth:`Graph.state_shapes`);
- ``methods``: ``forward`` and, where the torch model has them, ``encode`` / ``decode``; each a
  :class:`Method`: its argument names, its nodes in execution order and its output structure;
- a :class:`Node` is one call: ``op == "module"`` calls ``modules[target]``; any other ``op`` is a
  functional operation of :data:`OPS` (``relu``, ``view``, ``interpolate``, ``cat``...) with its
  arguments normalised to keywords (``OPS[op]`` says which, with torch's defaults). A parameter-free
  torch module (``nn.MaxPool2d``, ``nn.LeakyReLU(0.2)``, ``nn.Flatten``) is the op it computes, its
  ``target`` keeping the module's name. Arguments refer to earlier values by :class:`Ref`.

Values are in torch's layout (channels first) everywhere in the graph; a framework may run some
layers in another layout inside (NNX convolutions run channels-last) but the graph's semantics are
torch's. Random draws (``torch.randn_like``, dropout in train mode) are *supplied* noise, keyed by node
(:meth:`Graph.noise_shapes`), as ``ae_core.noise`` supplies it for the presets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from .layers import LAYER_KINDS, LayerSpec, SpecError, spec_class


@dataclass(frozen=True)
class Ref:
    """A reference to an earlier value: a method argument or a node's output."""

    name: str


@dataclass(frozen=True)
class OpSig:
    """An op's arguments in torch's order, with torch's defaults (``REQUIRED`` for none); ``varargs``:
    the name that collects ``*args`` (``view(*shape)``, ``permute(*dims)``)."""

    params: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    varargs: str | None = None
    noise: str | None = None  # "normal" / "bernoulli": the op is a random draw, supplied as noise
    shown: str = ""  # how a user writes it (for messages)


REQUIRED = object()


def _sig(*params, varargs=None, noise=None, **defaults) -> OpSig:
    return OpSig(tuple(params) + tuple(defaults), defaults, varargs, noise)


# The functional operations a graph may contain, torch's names and defaults. Each framework implements
# every one (``ae_torch.graph``, ``ae_jax.graph``); a table test checks that none is missing.
OPS: dict[str, OpSig] = {
    # elementwise activations
    "relu": _sig("input"),
    "leaky_relu": _sig("input", negative_slope=0.01),
    "elu": _sig("input", alpha=1.0),
    "selu": _sig("input"),
    "gelu": _sig("input", approximate="none"),
    "silu": _sig("input"),
    "sigmoid": _sig("input"),
    "tanh": _sig("input"),
    "softplus": _sig("input", beta=1.0, threshold=20.0),
    "softmax": _sig("input", dim=None),
    # elementwise arithmetic (operator.add, torch.add, Tensor.add ... all become these)
    "add": _sig("input", "other", alpha=1),
    "sub": _sig("input", "other", alpha=1),
    "mul": _sig("input", "other"),
    "truediv": _sig("input", "other"),
    "pow": _sig("input", "exponent"),
    "neg": _sig("input"),
    "exp": _sig("input"),
    "log": _sig("input"),
    "sqrt": _sig("input"),
    "abs": _sig("input"),
    "matmul": _sig("input", "other"),
    # shapes
    "view": _sig("input", varargs="shape"),
    "reshape": _sig("input", varargs="shape"),
    "flatten": _sig("input", start_dim=0, end_dim=-1),
    "unflatten": _sig("input", "dim", "sizes"),
    "permute": _sig("input", varargs="dims"),
    "repeat": _sig("input", varargs="sizes"),
    "transpose": _sig("input", "dim0", "dim1"),
    "squeeze": _sig("input", dim=None),
    "unsqueeze": _sig("input", "dim"),
    "contiguous": _sig("input"),
    "size": _sig("input", dim=None),
    "cat": _sig("tensors", dim=0),
    "stack": _sig("tensors", dim=0),
    "chunk": _sig("input", "chunks", dim=0),
    "getitem": _sig("input", "index"),
    "identity": _sig("input"),
    # reductions
    "sum": _sig("input", dim=None, keepdim=False),
    "mean": _sig("input", dim=None, keepdim=False),
    # pooling and resampling (channels first: (N, C, H, W))
    "max_pool2d": _sig("input", "kernel_size", stride=None, padding=0, dilation=1, ceil_mode=False),
    "avg_pool2d": _sig("input", "kernel_size", stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                       divisor_override=None),
    "adaptive_avg_pool2d": _sig("input", "output_size"),
    "interpolate": _sig("input", size=None, scale_factor=None, mode="nearest", align_corners=None),
    # normalisation without module state (weight / bias: computed values or None)
    "layer_norm": _sig("input", "normalized_shape", weight=None, bias=None, eps=1e-5),
    "group_norm": _sig("input", "num_groups", weight=None, bias=None, eps=1e-5),
    "batch_norm": _sig("input", "running_mean", "running_var", weight=None, bias=None, training=False, momentum=0.1,
                       eps=1e-5),
    # random draws: supplied noise (per example, channels first), the same arrays for both frameworks;
    # torch.randn / torch.rand: the first size is the batch's (x.size(0)), the dtype torch's default unless given
    "randn_like": _sig("input", noise="normal"),
    "rand_like": _sig("input", noise="uniform"),
    "randn": _sig(varargs="size", dtype=None, noise="normal"),
    "rand": _sig(varargs="size", dtype=None, noise="uniform"),
    "dropout": _sig("input", p=0.5, noise="bernoulli"),
}
for _name, _op in OPS.items():
    object.__setattr__(_op, "shown", _name)


def normalize_args(op: str, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``op``'s call arguments as ``{parameter: value}``, torch's defaults filled in (SpecError for an
    unknown op, a missing or unknown argument)."""
    if op not in OPS:
        raise SpecError(f"unknown op {op!r}")
    sig = OPS[op]
    fixed = [p for p in sig.params if p not in sig.defaults]
    out: dict[str, Any] = {}
    args = list(args)
    if sig.varargs:
        n = len(fixed)
        rest = args[n:]
        if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
            rest = list(rest[0])  # x.view((n, -1)) is x.view(n, -1)
        if sig.varargs in kwargs:  # x.view(size=...) / permute(dims=...)
            rest = list(kwargs[sig.varargs])
        out[sig.varargs] = list(rest)
        args = args[:n]
    for p, v in zip(sig.params, args):
        out[p] = v
    if len(args) > len(sig.params):
        raise SpecError(f"{op}: {len(args)} positional arguments, it takes {len(sig.params)}")
    for k, v in kwargs.items():
        if k == sig.varargs:
            continue
        if k not in sig.params:
            raise SpecError(f"{op}: unknown argument {k!r}")
        out[k] = v
    for p in sig.params:
        if p not in out:
            if p not in sig.defaults:
                raise SpecError(f"{op}: missing argument {p!r}")
            out[p] = sig.defaults[p]
    return out


@dataclass(frozen=True)
class Node:
    """One call. ``op``: "module" (call ``Graph.modules[target]`` on ``args``) or a key of :data:`OPS`
    (arguments normalised into ``kwargs``); ``target``: the module path (for an op computed by a
    parameter-free torch module, that module's name); ``shape``: the output's shape in the traced call,
    batch included (None for non-arrays); ``source``: ``file:line`` of the torch code it came from."""

    name: str
    op: str
    target: str = ""
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None
    source: str = ""


@dataclass(frozen=True)
class Method:
    """``forward`` / ``encode`` / ``decode``: argument names, nodes in execution order, the output (a
    structure of :class:`Ref` and constants: tuple / list / dict)."""

    inputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    output: Any


@dataclass(frozen=True, eq=True)
class Graph:
    """A traced model (see the module docstring). ``input_shape``: the per-example shape of the first
    argument of ``forward`` in the traced call (channels first); ``dtype``: the model's."""

    name: str
    modules: Mapping[str, LayerSpec]
    methods: Mapping[str, Method]
    input_shape: tuple[int, ...] = ()
    dtype: str = "float32"

    def __hash__(self) -> int:  # static metadata of an NNX module: jit caches on it (dict fields have no hash)
        return self._hash

    def __post_init__(self) -> None:
        for path, spec in self.modules.items():
            if LAYER_KINDS.get(getattr(spec, "kind", None)) is None:
                raise SpecError(f"{self.name}: module {path!r} is {spec!r}, not a layer spec")
        if "forward" not in self.methods:
            raise SpecError(f"{self.name}: a graph needs a forward method")
        for mname, method in self.methods.items():
            self._check_method(mname, method)
        object.__setattr__(self, "_hash", hash(self.to_json()))  # once: jit hashes the graph at every call

    def _check_method(self, mname: str, method: Method) -> None:
        known = set(method.inputs)
        for node in method.nodes:
            where = f"{self.name}.{mname}: node {node.name!r}"
            if node.name in known:
                raise SpecError(f"{where}: the name is used twice")
            if node.op == "module":
                if node.target not in self.modules:
                    raise SpecError(f"{where} calls module {node.target!r}, which the graph does not have")
            elif node.op not in OPS:
                raise SpecError(f"{where}: unknown op {node.op!r}")
            for ref in refs(node.args, node.kwargs):
                if ref.name not in known:
                    raise SpecError(f"{where} uses {ref.name!r} before it is computed")
            known.add(node.name)
        for ref in refs(method.output):
            if ref.name not in known:
                raise SpecError(f"{self.name}.{mname}: the output uses {ref.name!r}, which is never computed")

    # -- what the graph holds ---------------------------------------------------------------------
    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Everything in the torch model's ``state_dict``: ``{path.name: shape}`` (torch layout)."""
        return {f"{path}.{k}": s for path, spec in self.modules.items() for k, s in spec.state_shapes().items()}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"{path}.{k}": s for path, spec in self.modules.items() for k, s in spec.param_shapes().items()}

    def int_keys(self) -> set[str]:
        return {f"{path}.{b}" for path, spec in self.modules.items() for b in spec.int_buffers}

    def has(self, *kinds: str) -> bool:
        """Whether a module is one of the layer ``kinds`` (as ``ModelSpec.has``)."""
        return any(spec.kind in kinds for spec in self.modules.values())

    def same_architecture(self, other: "Graph") -> bool:
        """The same modules, methods and input shape; the name, the dtype, the batch size of the traced call
        and each node's source line (which moves when the torch file is edited elsewhere) do not count."""
        def plain(g: Graph):
            def node(n: Node) -> Node:
                return replace(n, source="", shape=None if n.shape is None else tuple(n.shape[1:]))

            return {m: Method(meth.inputs, tuple(map(node, meth.nodes)), meth.output) for m, meth in g.methods.items()}

        return (isinstance(other, Graph) and dict(self.modules) == dict(other.modules)
                and tuple(self.input_shape) == tuple(other.input_shape) and plain(self) == plain(other))

    def noise_shapes(self, method: str = "forward") -> dict[str, tuple[str, tuple[int, ...], float]]:
        """The random draws of ``method``: ``{node name: (kind, per-example shape, param)}`` -- "normal"
        (standard normal, param 1), "uniform" (U[0, 1), param 1) or "bernoulli" (param = keep probability),
        as ``ae_core.noise``."""
        out = {}
        for node in self.methods[method].nodes:
            if node.op == "module" and "noise" in self.modules[node.target].inputs:
                # a layer spec's own train-mode noise (a lowered preset's Dropout, corruption): shape-preserving
                # layers, their input's shape is their output's
                out[node.name] = self.modules[node.target].noise(tuple(node.shape[1:]))
                continue
            kind = OPS[node.op].noise if node.op in OPS else None
            if kind:
                keep = 1.0 - float(node.kwargs["p"]) if kind == "bernoulli" else 1.0
                out[node.name] = (kind, tuple(node.shape[1:]), keep)
        return out

    # -- serialisation ----------------------------------------------------------------------------
    def to_json(self) -> str:
        d = {"name": self.name, "input_shape": list(self.input_shape), "dtype": self.dtype,
             "modules": {p: {"kind": s.kind, **asdict(s)} for p, s in self.modules.items()},
             "methods": {m: {"inputs": list(meth.inputs), "output": _encode(meth.output),
                             "nodes": [{"name": n.name, "op": n.op, "target": n.target, "args": _encode(list(n.args)),
                                        "kwargs": _encode(dict(n.kwargs)),
                                        "shape": None if n.shape is None else list(n.shape), "source": n.source}
                                       for n in meth.nodes]}
                         for m, meth in self.methods.items()}}
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Graph":
        try:
            d = json.loads(text)
            modules = {}
            for path, item in d["modules"].items():
                item = dict(item)
                modules[path] = spec_class(item.pop("kind"))(**item)
            methods = {m: Method(tuple(meth["inputs"]),
                                 tuple(Node(n["name"], n["op"], n.get("target", ""), tuple(_decode(n["args"])),
                                            _decode(n["kwargs"]),
                                            None if n.get("shape") is None else tuple(n["shape"]), n.get("source", ""))
                                       for n in meth["nodes"]),
                                 _decode(meth["output"]))
                       for m, meth in d["methods"].items()}
            return cls(d["name"], modules, methods, tuple(d.get("input_shape", ())), d.get("dtype", "float32"))
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
            raise SpecError(f"not a valid model graph: {type(e).__name__}: {e}") from None


def module_tree(modules: Mapping[str, Any]) -> dict[str, Any]:
    """``{"encoder.0.0": m, "fc_mu": m2}`` -> nested dicts along the paths (how both runtimes hold them)."""
    root: dict[str, Any] = {}
    for path, module in modules.items():
        node = root
        *heads, leaf = path.split(".")
        for h in heads:
            node = node.setdefault(h, {})
        node[leaf] = module
    return root


def is_list(keys) -> bool:
    """Children named 0, 1, ... n-1 in order: an ``nn.Sequential`` / ``nn.ModuleList`` with every child a
    module (torch: ``nn.Sequential``, NNX: ``nnx.List``); other names are a user's block."""
    keys = list(keys)
    return keys == [str(i) for i in range(len(keys))]


def bind_inputs(graph: str, method: str, names: tuple[str, ...], args: tuple, kwargs: Mapping[str, Any]) -> dict:
    """A method's inputs given by position and by name -> ``{name: value}`` (TypeError for a missing,
    unknown or twice given one): what both runtimes do with a call's arguments."""
    where = f"{graph}.{method.split('@')[0]}"
    if len(args) > len(names):
        raise TypeError(f"{where} takes {len(names)} input(s) ({', '.join(names)}), got {len(args)}")
    env = dict(zip(names, args))
    for k, v in kwargs.items():
        if k not in names or k in env:
            raise TypeError(f"{where}: input {k!r} " + ("given twice" if k in env else
                                                        f"unknown (inputs: {', '.join(names)})"))
        env[k] = v
    missing = [n for n in names if n not in env]
    if missing:
        raise TypeError(f"{where} needs input(s) {', '.join(map(repr, missing))}")
    return env


def eval_method(graph: Graph, method: str = "forward") -> str:
    """The method a graph runs in eval mode: ``<method>@eval`` where the traced code differs by mode."""
    return f"{method}@eval" if f"{method}@eval" in graph.methods else method


def resolve(v, env: Mapping[str, Any]):
    """``v`` (an argument value or a method's output) with every :class:`Ref` replaced by its value in ``env``:
    how both frameworks' runtimes read a node's arguments."""
    if isinstance(v, Ref):
        return env[v.name]
    if isinstance(v, list):
        return [resolve(x, env) for x in v]
    if isinstance(v, tuple):
        return tuple(resolve(x, env) for x in v)
    if isinstance(v, dict):
        return {k: resolve(x, env) for k, x in v.items()}
    if isinstance(v, slice):
        return slice(resolve(v.start, env), resolve(v.stop, env), resolve(v.step, env))
    return v


def refs(*values) -> list[Ref]:
    """Every :class:`Ref` inside (nested) values."""
    out: list[Ref] = []

    def walk(v):
        if isinstance(v, Ref):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, Mapping):
            for x in v.values():
                walk(x)
        elif isinstance(v, slice):
            for x in (v.start, v.stop, v.step):
                walk(x)

    for v in values:
        walk(v)
    return out


def _encode(v):
    """JSON for argument values: Refs, tuples, slices and Ellipsis tagged; lists, dicts and scalars as they are."""
    if isinstance(v, Ref):
        return {"ref": v.name}
    if isinstance(v, tuple):
        return {"tuple": [_encode(x) for x in v]}
    if isinstance(v, list):
        return [_encode(x) for x in v]
    if isinstance(v, slice):
        return {"slice": [_encode(v.start), _encode(v.stop), _encode(v.step)]}
    if v is Ellipsis:
        return {"ellipsis": True}
    if isinstance(v, Mapping):
        return {"dict": {str(k): _encode(x) for k, x in v.items()}}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise SpecError(f"cannot store {type(v).__name__} {v!r} in a graph")


def _decode(v):
    if isinstance(v, list):
        return [_decode(x) for x in v]
    if isinstance(v, dict):
        if "ref" in v:
            return Ref(v["ref"])
        if "tuple" in v:
            return tuple(_decode(x) for x in v["tuple"])
        if "slice" in v:
            return slice(*(_decode(x) for x in v["slice"]))
        if "ellipsis" in v:
            return Ellipsis
        if "dict" in v:
            return {k: _decode(x) for k, x in v["dict"].items()}
        return {k: _decode(x) for k, x in v.items()}  # a node's kwargs
    return v
