"""PyTorch modules -> model graphs (``ae_core.graph``).

:func:`trace` turns an ``nn.Module`` into a :class:`~ae_core.graph.Graph`: ``torch.fx`` traces
``forward`` (and ``encode`` / ``decode`` where the model has them) down to its stateful layers
(``nn.Linear``, ``nn.Conv2d``, ``nn.BatchNorm2d``... the layer specs of ``ae_core.layers``, named by
their module paths) and the functional code between them (``F.relu``, ``x.view(...)``, ``torch.cat``,
``F.interpolate``...; a parameter-free module such as ``nn.MaxPool2d`` is the op it computes). Random
draws (``torch.randn_like``, dropout in train mode) become supplied noise. Anything the graph cannot
express is reported at once: one :class:`PortError` listing every unsupported module, function and
argument with its source line, and nothing is built. ``ae_torch.graph`` runs a graph in torch.
"""

from __future__ import annotations

import builtins
import inspect
import operator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ae_core import UsageError
from ae_core import layers as L
from ae_core.graph import Graph, Method, Node, Ref, normalize_args
from ae_core.layers import SpecError

from .fx_tracer import make_tracer, source_line



class PortError(UsageError):
    """The model uses what a graph cannot express (yet): every problem, each with its source line."""

    def __init__(self, model: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{model} cannot be ported ({len(problems)} problem(s)):\n" +
                         "\n".join(f"  {p}" for p in problems))


# ----------------------------------------------------------------------------- stateful layers ----
def _conv(spec):
    def make(m):
        padding = m.padding if isinstance(m.padding, str) else tuple(m.padding)
        return spec(m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride), padding, m.bias is not None,
                    dilation=tuple(m.dilation), groups=m.groups, padding_mode=m.padding_mode)
    return make


def _conv_transpose(m: nn.ConvTranspose2d) -> L.ConvTranspose2d:
    return L.ConvTranspose2d(m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride), tuple(m.padding),
                             tuple(m.output_padding), m.bias is not None, dilation=tuple(m.dilation), groups=m.groups)


def _batchnorm(spec):
    def make(m):
        return spec(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                    track_running_stats=m.track_running_stats)
    return make


def _embedding(m: nn.Embedding) -> L.Embedding:
    if m.max_norm is not None or m.scale_grad_by_freq or m.sparse:
        raise SpecError(f"max_norm={m.max_norm}, scale_grad_by_freq={m.scale_grad_by_freq}, sparse={m.sparse}: "
                        f"only max_norm=None (it renormalises the table in place during the forward), "
                        f"scale_grad_by_freq=False and sparse=False (the gradients are dense)")
    return L.Embedding(m.num_embeddings, m.embedding_dim, m.padding_idx)


def _recurrent(spec):
    def make(m):
        bad = [f"{k}={v}" for k, v, ok in (("bidirectional", m.bidirectional, False),
                                           ("proj_size", getattr(m, "proj_size", 0), 0)) if v != ok]
        if m.dropout and m.num_layers > 1:
            bad.append(f"dropout={m.dropout} (a random draw between layers inside the module)")
        if bad:
            raise SpecError(f"{type(m).__name__}({', '.join(bad)}): only unidirectional layers without projection or "
                            f"dropout between layers")
        return spec(m.input_size, m.hidden_size, m.num_layers, m.bias, m.batch_first, returns_state=True)
    return make


LAYERS = {
    nn.Linear: lambda m: L.Linear(m.in_features, m.out_features, m.bias is not None),
    nn.Conv1d: _conv(L.Conv1d),
    nn.Conv2d: _conv(L.Conv2d),
    nn.ConvTranspose2d: _conv_transpose,
    nn.BatchNorm1d: _batchnorm(L.BatchNorm1d),
    nn.BatchNorm2d: _batchnorm(L.BatchNorm2d),
    nn.LayerNorm: lambda m: L.LayerNorm(tuple(m.normalized_shape), m.eps, m.elementwise_affine, m.bias is not None),
    nn.GroupNorm: lambda m: L.GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine),
    nn.PReLU: lambda m: L.PReLU(m.num_parameters, float(m.init)),
    nn.Embedding: _embedding,
    nn.LSTM: _recurrent(L.LSTM),
    nn.GRU: _recurrent(L.GRU),
}

# Parameter-free modules: the op each computes, with its arguments read from the module.
MODULE_OPS = {
    nn.ReLU: lambda m: ("relu", {}),
    nn.LeakyReLU: lambda m: ("leaky_relu", {"negative_slope": m.negative_slope}),
    nn.ELU: lambda m: ("elu", {"alpha": m.alpha}),
    nn.SELU: lambda m: ("selu", {}),
    nn.GELU: lambda m: ("gelu", {"approximate": m.approximate}),
    nn.SiLU: lambda m: ("silu", {}),
    nn.Sigmoid: lambda m: ("sigmoid", {}),
    nn.Tanh: lambda m: ("tanh", {}),
    nn.Softplus: lambda m: ("softplus", {"beta": m.beta, "threshold": m.threshold}),
    nn.Softmax: lambda m: ("softmax", {"dim": m.dim}),
    nn.Identity: lambda m: ("identity", {}),
    nn.Flatten: lambda m: ("flatten", {"start_dim": m.start_dim, "end_dim": m.end_dim}),
    nn.Unflatten: lambda m: ("unflatten", {"dim": m.dim, "sizes": list(m.unflattened_size)}),
    nn.MaxPool2d: lambda m: ("max_pool2d", {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
                                            "dilation": m.dilation, "ceil_mode": m.ceil_mode}),
    nn.AvgPool2d: lambda m: ("avg_pool2d", {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
                                            "ceil_mode": m.ceil_mode, "count_include_pad": m.count_include_pad,
                                            "divisor_override": m.divisor_override}),
    nn.AdaptiveAvgPool2d: lambda m: ("adaptive_avg_pool2d", {"output_size": m.output_size}),
    nn.Upsample: lambda m: ("interpolate", {"size": m.size, "scale_factor": m.scale_factor, "mode": m.mode,
                                            "align_corners": m.align_corners}),
    nn.Dropout: lambda m: ("dropout", {"p": m.p}),
}
_MODULE_CHECKS = {nn.MaxPool2d: lambda m: "return_indices=True" if m.return_indices else ""}

# Functions and tensor methods: the op each is.
FUNCTIONS = {
    F.relu: "relu", torch.relu: "relu", F.leaky_relu: "leaky_relu", F.elu: "elu", F.selu: "selu", torch.selu: "selu",
    F.gelu: "gelu", F.silu: "silu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh",
    F.tanh: "tanh", F.softplus: "softplus", F.softmax: "softmax", torch.softmax: "softmax",
    operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub", operator.mul: "mul",
    torch.mul: "mul", operator.truediv: "truediv", torch.div: "truediv", operator.pow: "pow", torch.pow: "pow",
    operator.neg: "neg", torch.neg: "neg", torch.exp: "exp", torch.log: "log", torch.sqrt: "sqrt", torch.abs: "abs",
    operator.matmul: "matmul", torch.matmul: "matmul", torch.flatten: "flatten", torch.reshape: "reshape",
    torch.permute: "permute", torch.transpose: "transpose", torch.squeeze: "squeeze", torch.unsqueeze: "unsqueeze",
    torch.cat: "cat", torch.concat: "cat", torch.stack: "stack", torch.chunk: "chunk", operator.getitem: "getitem",
    torch.sum: "sum", torch.mean: "mean", F.max_pool2d: "max_pool2d", F.avg_pool2d: "avg_pool2d",
    F.adaptive_avg_pool2d: "adaptive_avg_pool2d", F.interpolate: "interpolate", torch.randn_like: "randn_like",
    F.dropout: "dropout", F.layer_norm: "layer_norm", F.group_norm: "group_norm", F.batch_norm: "batch_norm",
    torch.rand_like: "rand_like", torch.randn: "randn", torch.rand: "rand",
}
METHODS = {name: name for name in ("relu", "sigmoid", "tanh", "exp", "log", "sqrt", "abs", "neg", "add", "sub", "mul",
                                   "pow", "matmul", "view", "reshape", "flatten", "permute", "repeat", "transpose", "squeeze",
                                   "unsqueeze", "contiguous", "size", "chunk", "sum", "mean", "softmax", "unflatten")}
METHODS.update({"div": "truediv", "__getitem__": "getitem"})
_DROPPED = ("inplace",)  # arguments that change nothing about the value
_INPLACE_AT = {F.relu: 1, F.leaky_relu: 2, F.elu: 2, F.selu: 1}  # the position of their `inplace` argument
# (op, argument): the value at which an argument torch accepts changes nothing (other values are reported)
_IGNORED = {("interpolate", "recompute_scale_factor"): None, ("interpolate", "antialias"): False,
            ("softmax", "_stacklevel"): 3, ("softmax", "dtype"): None, ("max_pool2d", "return_indices"): False}


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _is_layer(m: nn.Module) -> bool:
    """Where tracing stops: the layers and parameter-free modules that port, and torch's own other modules
    (``nn.MultiheadAttention``...), reported by name instead of by their internals; torch's containers
    and the user's own modules are traced through."""
    if type(m) in LAYERS or type(m) in MODULE_OPS:
        return True
    return type(m).__module__.startswith("torch.nn.") and not isinstance(m, _CONTAINERS)


class _Converter:
    """One traced method -> a :class:`Method`, collecting problems instead of stopping at the first."""

    def __init__(self, model: nn.Module, modules: dict, problems: list[str]):
        self.model, self.modules, self.problems = model, modules, problems
        self.submodules = dict(model.named_modules())
        self.devices: set[str] = set()  # nodes that are a value's .device (only ever passed where a device goes)

    def _is_device(self, v) -> bool:
        return isinstance(v, (str, torch.device)) or getattr(v, "name", None) in self.devices

    def _device_free(self, n):
        """``x.device`` (a node of its own, dropped), ``t.to(device)`` (the identity) -- or None: neither."""
        import torch.fx as fx

        if n.op == "call_function" and n.target is builtins.getattr and n.args[1] == "device":
            self.devices.add(n.name)
            return ()
        if n.op == "call_method" and n.target == "to":
            rest = [*n.args[1:], *(v for k, v in n.kwargs.items() if k == "device")]
            if set(n.kwargs) - {"device", "non_blocking", "copy"} or not rest or not all(map(self._is_device, rest)):
                raise SpecError("Tensor.to(...) is supported to a device only (a dtype changes the values)")
            return ("identity", (n.args[0],), {})
        if n.op == "call_function" and n.target in (torch.randn, torch.rand):
            kwargs = {k: v for k, v in n.kwargs.items() if k not in ("device", "layout", "pin_memory")}
            if kwargs.pop("requires_grad", False) or kwargs.pop("generator", None) is not None:
                raise SpecError(f"torch.{n.target.__name__}(requires_grad=True / generator=...) is not supported")
            size = n.args[0] if len(n.args) == 1 and isinstance(n.args[0], (list, tuple)) else n.args
            if not size or not isinstance(size[0], fx.Node):
                raise SpecError(f"torch.{n.target.__name__}{tuple(size)}: the first size must be the batch size "
                                f"(x.size(0)): a graph's draws are supplied one per example")
            return (n.target.__name__, tuple(size), kwargs)
        return None

    def value(self, v):
        import torch.fx as fx

        if isinstance(v, fx.Node):
            return Ref(v.name)
        if isinstance(v, (list, tuple)) and not isinstance(v, torch.Size):
            items = [self.value(x) for x in v]
            return tuple(items) if isinstance(v, tuple) else items
        if isinstance(v, torch.Size):
            return tuple(v)
        if isinstance(v, torch.dtype):
            return str(v).replace("torch.", "")
        if isinstance(v, slice):
            return slice(self.value(v.start), self.value(v.stop), self.value(v.step))
        if isinstance(v, dict):
            return {k: self.value(x) for k, x in v.items()}
        if v is None or v is Ellipsis or isinstance(v, (bool, int, float, str)):
            return v
        raise SpecError(f"an argument of type {type(v).__name__} ({v!r})")

    def node(self, n) -> Node | None:
        source = source_line(n)
        where = source or n.name
        meta = n.meta.get("tensor_meta")
        shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
        try:
            if n.op == "call_module":
                m = self.submodules[n.target]
                if type(m) in LAYERS:
                    if n.kwargs:
                        raise SpecError(f"{type(m).__name__} called with keyword arguments {sorted(n.kwargs)}: pass "
                                        f"them by position")
                    self.modules.setdefault(n.target, LAYERS[type(m)](m))
                    return Node(n.name, "module", n.target, tuple(self.value(a) for a in n.args), {}, shape, source)
                bad = _MODULE_CHECKS.get(type(m), lambda m: "")(m)
                if bad:
                    raise SpecError(f"{type(m).__name__}({bad})")
                if type(m) not in MODULE_OPS:
                    raise SpecError(f"nn.{type(m).__name__} is not supported (the layers that port: "
                                    f"{', '.join(sorted('nn.' + t.__name__ for t in LAYERS))}; and the "
                                    f"parameter-free modules of ae_torch.trace.MODULE_OPS)")
                op, kwargs = MODULE_OPS[type(m)](m)
                args = normalize_args(op, tuple(self.value(a) for a in n.args), {**kwargs, **{
                    k: self.value(v) for k, v in n.kwargs.items()}})
                return Node(n.name, op, n.target, (), args, shape, source)
            special = self._device_free(n) if n.op in ("call_function", "call_method") else None
            if special == ():
                return None
            if special is not None:
                op, args, kwargs = special
                return Node(n.name, op, "", (), normalize_args(op, tuple(self.value(a) for a in args),
                                                                {k: self.value(v) for k, v in kwargs.items()}),
                            shape, source)
            if n.op in ("call_function", "call_method"):
                if n.op == "call_function" and n.target is builtins.getattr:
                    if n.args[1] != "shape":
                        raise SpecError(f"the attribute .{n.args[1]} of a value is not supported")
                    op, args, kwargs = "size", n.args[:1], {}
                else:
                    table, key = (FUNCTIONS, n.target) if n.op == "call_function" else (METHODS, n.target)
                    op = table.get(key)
                    if op is None:
                        label = (f"Tensor.{n.target}" if n.op == "call_method"
                                 else f"{getattr(n.target, '__module__', '')}.{getattr(n.target, '__name__', n.target)}")
                        raise SpecError(f"{label} is not supported")
                    args, kwargs = n.args, {k: v for k, v in n.kwargs.items() if k not in _DROPPED}
                    if n.op == "call_function" and n.target in _INPLACE_AT:  # F.relu(x, True): drop `inplace`
                        args = args[:_INPLACE_AT[n.target]]
                if op == "dropout":
                    return self._dropout(n, args, kwargs, shape, source)
                kwargs = {k: v for k, v in kwargs.items() if _IGNORED.get((op, k), object()) != v}
                return Node(n.name, op, "", (), normalize_args(op, tuple(self.value(a) for a in args),
                                                                {k: self.value(v) for k, v in kwargs.items()}),
                            shape, source)
            if n.op == "get_attr":
                raise SpecError(f"a tensor attribute used directly ({n.target}): only layers' own parameters are "
                                f"supported")
        except SpecError as e:
            self.problems.append(f"{where}: {n.name}: {e}")
            return None
        except (KeyError, TypeError) as e:
            self.problems.append(f"{where}: {n.name}: {type(e).__name__}: {e}")
            return None
        raise AssertionError(n.op)

    def _dropout(self, n, args, kwargs, shape, source):
        call = dict(zip(("input", "p", "training", "inplace"), args), **kwargs)
        if not call.get("training", True):
            return Node(n.name, "identity", "", (), {"input": self.value(call["input"])}, shape, source)
        return Node(n.name, "dropout", "", (), {"input": self.value(call["input"]), "p": float(call.get("p", 0.5))},
                    shape, source)


def _method_args(fn) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(fn).parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _bound(model: nn.Module, method: str) -> nn.Module:
    """``model`` with ``method`` as its forward, for fx: the same object state (``__dict__`` shared), so
    its submodules keep their paths and its other methods and attributes are there."""
    if method == "forward":
        return model
    cls = type(model)
    bound_cls = type(f"{cls.__name__}_{method}", (cls,), {"forward": getattr(cls, method)})
    bound = bound_cls.__new__(bound_cls)
    bound.__dict__ = model.__dict__
    return bound


def _trace_method(model, mname: str, examples: tuple, modules: dict, problems: list[str]) -> Method | None:
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    tracer = make_tracer(_is_layer)
    # the arguments after the examples keep their defaults (forward(x, noise=None)): fixed while tracing
    concrete = {p.name: p.default for p in _method_args(getattr(type(model), mname))[1 + len(examples):]}
    try:
        g = tracer.trace(_bound(model, mname), concrete_args=concrete or None)
    except Exception as e:  # noqa: BLE001 - torch.export, else reported, never half-built
        from .export import export_method

        fx_error = f"{type(model).__name__}.{mname}: torch.fx cannot trace it ({type(e).__name__}: {str(e)[:200]})"
        found: list[str] = []
        method = export_method(_bound(model, mname), model, examples, modules, found)
        if found and not found[0].startswith("torch.export"):  # exported, but with what a graph cannot hold
            problems.append(f"{fx_error}; torch.export traced it, and its program has:")
        problems.extend(f"{fx_error}; {p}" if p.startswith("torch.export") else p for p in found)
        return method
    try:
        with torch.no_grad():
            ShapeProp(fx.GraphModule(tracer.root, g)).propagate(*examples, *concrete.values())
    except Exception as e:  # noqa: BLE001 - the model fails on its example: reported, never half-built
        cause = e.__cause__ or e
        problems.append(f"{type(model).__name__}.{mname} fails on the example input ({type(cause).__name__}: "
                        f"{str(cause).splitlines()[0][:200]})")
        return None
    conv = _Converter(model, modules, problems)
    nodes, output, inputs = [], None, []
    fixed: set = set()  # the defaulted arguments and fx's checks of their values
    for n in g.nodes:
        if n.op == "placeholder" and len(inputs) < len(examples):
            inputs.append(n.name)
        elif n.op == "placeholder" or any(a in fixed for a in n.all_input_nodes):
            fixed.add(n)
        elif n.op == "output":
            output = conv.value(n.args[0])
        else:
            node = conv.node(n)
            if node is not None:
                nodes.append(node)
    return Method(tuple(inputs), tuple(nodes), output)


def trace(model: nn.Module, *example, methods: tuple[str, ...] = ("forward", "encode", "decode"),
          name: str | None = None) -> Graph:
    """The graph of ``model`` (see the module docstring) for ``forward(*example)``, and ``encode`` /
    ``decode`` where the model defines them (``encode`` on the example's first input, ``decode`` on
    ``encode``'s first output). Traced in train mode and in eval mode on a copy (the model, its running
    statistics and the caller's RNG are left alone); where a method's code differs between the modes
    (``F.dropout(x, p, self.training)``, ``if self.training:``) the graph keeps both, the eval one as
    ``<method>@eval``. Raises :class:`PortError` listing every unsupported construct."""
    import copy

    name = name or type(model).__name__
    modules: dict[str, Any] = {}
    problems: list[str] = []
    out: dict[str, Method] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for mode in ("train", "eval"):
            work = copy.deepcopy(model).train(mode == "train")
            examples = {"forward": tuple(example)}
            for mname in methods:
                if mname != "forward" and not callable(getattr(type(model), mname, None)):
                    continue
                if mname == "encode":
                    examples[mname] = example[:1]
                elif mname == "decode":
                    if "encode" not in examples:
                        continue
                    with torch.no_grad():
                        code = work.encode(*examples["encode"])
                    examples[mname] = (code[0] if isinstance(code, (list, tuple)) else code,)
                params = _method_args(getattr(type(model), mname))[1:]
                required = [p for p in params if p.default is p.empty]
                if not len(required) <= len(examples[mname]) <= len(params):
                    takes = f"{len(required)} to {len(params)}" if len(required) < len(params) else len(params)
                    problems.append(f"{name}.{mname} takes {takes} input(s), traced with {len(examples[mname])}: "
                                    f"pass one example per forward input (those left out keep their defaults)")
                    continue
                method = _trace_method(work, mname, examples[mname], modules, problems)
                if method is None:
                    continue
                if mode == "train":
                    out[mname] = method
                elif method.nodes != out[mname].nodes or method.output != out[mname].output:
                    out[f"{mname}@eval"] = method
            if problems:
                break
    if problems:
        raise PortError(name, list(dict.fromkeys(problems)))
    ordered = {path: modules[path] for path, _ in model.named_modules() if path in modules}
    dtypes = {str(p.dtype).replace("torch.", "") for p in model.parameters()}
    return Graph(name, ordered, out, tuple(example[0].shape[1:]), dtypes.pop() if len(dtypes) == 1 else "float32")


__all__ = ["FUNCTIONS", "LAYERS", "METHODS", "MODULE_OPS", "PortError", "trace"]
