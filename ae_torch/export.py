"""torch.export where torch.fx cannot trace: the second front end of ``ae_torch.trace``.

``torch.fx`` traces symbolically, so Python control flow on a value's shape (``if x.dim() == 3:``,
``for t in range(x.size(1)):``) stops it. ``torch.export`` runs the model on the example instead,
keeping the batch dimension symbolic (``Dim("batch")``) and every other shape concrete, and records ATen
operations, each with the module stack it came from. :func:`export_method` turns that program into the
same :class:`~ae_core.graph.Method` the fx front end gives:

- the operations inside one call of a layer that ports (``LAYERS``: ``nn.Linear``, ``nn.Conv2d``,
  ``nn.LSTM``...) become one module node under the layer's path, its arguments the tensors flowing in;
- every other ATen operation becomes the graph op it computes (:data:`ATEN`), named as torch's;
- what is not in the table, a layer's parameter used outside its layer, and torch's own modules that do
  not port are reported, each with its source line, and nothing is built.
"""

from __future__ import annotations

import operator
import warnings
from collections import Counter
from typing import Any

import torch
from torch import nn

from ae_core.graph import Method, Node, Ref, normalize_args
from ae_core.layers import SpecError

from .fx_tracer import source_line

_END = 2 ** 62  # aten.slice's "to the end"


def _index(dim: int, item) -> tuple:
    return (slice(None, None, None),) * dim + (item,)


def _slice(x, dim=0, start=None, end=None, step=1):
    end = None if end is not None and end >= _END else end
    return "getitem", {"input": x, "index": _index(dim, slice(start or None, end, None if step == 1 else step))}


def _first(op: str, *names: str, **fixed):
    """An ATen op whose leading arguments are the graph op's ``names``, in order."""
    def make(*args, **kwargs):
        return op, {**dict(zip(names, args)), **kwargs, **fixed}
    return make


def _elu(x, alpha=1.0, scale=1.0, input_scale=1.0):
    if scale != 1.0 or input_scale != 1.0:
        raise SpecError(f"aten.elu(scale={scale}, input_scale={input_scale}): only the plain ELU")
    return "elu", {"input": x, "alpha": alpha}


def _reduce(op):
    def make(x, dim=None, keepdim=False, dtype=None):
        if dtype is not None:
            raise SpecError(f"{op}(dtype=...) is not supported")
        dim = dim[0] if isinstance(dim, (list, tuple)) and len(dim) == 1 else dim
        return op, {"input": x, "dim": dim, "keepdim": keepdim}
    return make


def _interpolate(mode):
    def make(x, output_size=None, *rest):
        align = rest[0] if mode != "nearest" and rest else None
        scales = rest[-1] if rest else None
        if scales is not None and len(set(scales)) == 1:
            scales = float(scales[0])
        return "interpolate", {"input": x, "size": output_size, "scale_factor": scales, "mode": mode,
                               "align_corners": align}
    return make


def _pool(op):
    def make(x, kernel_size, stride=(), *rest):
        names = {"max_pool2d": ("padding", "dilation", "ceil_mode"),
                 "avg_pool2d": ("padding", "ceil_mode", "count_include_pad", "divisor_override")}[op]
        return op, {"input": x, "kernel_size": kernel_size, "stride": list(stride) or None, **dict(zip(names, rest))}
    return make


def _copy(x, dtype=None, **kwargs):
    if dtype is not None:
        raise SpecError("a conversion to another dtype (Tensor.to(dtype)) is not supported")
    return "identity", {"input": x}


def _squeeze(x, dim=None):
    if isinstance(dim, (list, tuple)):
        if len(dim) != 1:
            raise SpecError(f"squeeze of several dimensions {list(dim)} is not supported")
        dim = dim[0]
    return "squeeze", {"input": x, "dim": dim}


def _draw(op):
    def make(size, dtype=None, **kwargs):
        return op, {"size": list(size), "dtype": None if dtype is None else str(dtype).replace("torch.", "")}
    return make


_IDENTITY = _first("identity", "input")
# One entry per ATen op (by its name, any overload): the graph op it is, with the graph op's argument names.
ATEN = {
    **{name: _first(name, "input") for name in ("relu", "selu", "silu", "sigmoid", "tanh", "exp", "log", "sqrt",
                                                "abs", "neg", "randn_like", "rand_like")},
    "leaky_relu": _first("leaky_relu", "input", "negative_slope"),
    "elu": _elu,
    "gelu": _first("gelu", "input"),
    "softplus": _first("softplus", "input", "beta", "threshold"),
    "softmax": lambda x, dim, *rest: ("softmax", {"input": x, "dim": dim}),
    "_softmax": lambda x, dim, *rest: ("softmax", {"input": x, "dim": dim}),
    "add": _first("add", "input", "other", "alpha"),
    "sub": _first("sub", "input", "other", "alpha"),
    "rsub": lambda x, other, alpha=1: ("sub", {"input": other, "other": x, "alpha": alpha}),
    "mul": _first("mul", "input", "other"),
    "div": _first("truediv", "input", "other"),
    "pow": _first("pow", "input", "exponent"),
    "matmul": _first("matmul", "input", "other"),
    "mm": _first("matmul", "input", "other"),
    "bmm": _first("matmul", "input", "other"),
    "view": _first("view", "input", "shape"),
    "_unsafe_view": _first("view", "input", "shape"),
    "reshape": _first("reshape", "input", "shape"),
    "flatten": _first("flatten", "input", "start_dim", "end_dim"),
    "unflatten": _first("unflatten", "input", "dim", "sizes"),
    "permute": _first("permute", "input", "dims"),
    "repeat": _first("repeat", "input", "sizes"),
    "transpose": _first("transpose", "input", "dim0", "dim1"),
    "t": lambda x: ("transpose", {"input": x, "dim0": 0, "dim1": 1}),
    "unsqueeze": _first("unsqueeze", "input", "dim"),
    "squeeze": _squeeze,
    "cat": _first("cat", "tensors", "dim"),
    "concat": _first("cat", "tensors", "dim"),
    "stack": _first("stack", "tensors", "dim"),
    "chunk": _first("chunk", "input", "chunks", "dim"),
    "slice": _slice,
    "select": lambda x, dim, index: ("getitem", {"input": x, "index": _index(dim, index)}),
    "sum": _reduce("sum"),
    "mean": _reduce("mean"),
    "max_pool2d": _pool("max_pool2d"),
    "avg_pool2d": _pool("avg_pool2d"),
    "adaptive_avg_pool2d": _first("adaptive_avg_pool2d", "input", "output_size"),
    "upsample_nearest2d": _interpolate("nearest"),
    "upsample_bilinear2d": _interpolate("bilinear"),
    "layer_norm": _first("layer_norm", "input", "normalized_shape", "weight", "bias", "eps"),
    "group_norm": _first("group_norm", "input", "num_groups", "weight", "bias", "eps"),
    "randn": _draw("randn"),
    "rand": _draw("rand"),
    "dropout": lambda x, p, train: ("dropout", {"input": x, "p": p}) if train else ("identity", {"input": x}),
    "sym_size": _first("size", "input", "dim"),
    "clone": _IDENTITY, "contiguous": _IDENTITY, "alias": _IDENTITY, "detach": _IDENTITY,
    "lift_fresh_copy": _IDENTITY, "_to_copy": _copy, "to": _copy,
}
PYTHON = {operator.getitem: "getitem", operator.add: "add", operator.sub: "sub", operator.mul: "mul"}


def _aten_name(target) -> str:
    packet = getattr(target, "overloadpacket", None)
    return getattr(packet, "__name__", str(target))


class _Program:
    """One exported program -> one :class:`Method`, collecting problems instead of stopping at the first."""

    def __init__(self, model: nn.Module, ep, batch: int, modules: dict, problems: list[str]):
        from .trace import LAYERS, MODULE_OPS

        self.layers, self.module_ops, self.source = LAYERS, MODULE_OPS, source_line
        self.model, self.ep, self.batch, self.modules, self.problems = model, ep, batch, modules, problems
        self.submodules = dict(model.named_modules())
        self.state = {s.arg.name: s.target for s in ep.graph_signature.input_specs
                      if s.kind.name in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR")}
        self.renamed: dict[str, Any] = {}  # node name -> what uses of it read instead (a layer's outputs)

    def problem(self, n, text: str) -> None:
        self.problems.append(f"{self.source(n) or n.name}: {n.name}: {text}")

    def module_of(self, n):
        """The innermost module of a node's call stack: ``(call key, path, module)``."""
        stack = n.meta.get("nn_module_stack") or {}
        if not stack:
            return None, "", None
        key, (path, _) = list(stack.items())[-1]
        return key, path, self.submodules.get(path)

    def value(self, v):
        import torch.fx as fx

        if isinstance(v, fx.Node):
            if v.name in self.state:
                raise SpecError(f"the tensor {self.state[v.name]} used outside its own layer: only layers' own "
                                f"parameters, in their layer, are supported")
            return self.renamed.get(v.name, Ref(v.name))
        if isinstance(v, (list, tuple)):
            items = [self.value(x) for x in v]
            return tuple(items) if isinstance(v, tuple) else items
        if isinstance(v, slice):
            return slice(self.value(v.start), self.value(v.stop), self.value(v.step))
        if isinstance(v, torch.dtype):
            return str(v).replace("torch.", "")
        if isinstance(v, (torch.device, torch.layout, torch.memory_format)):
            return None
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise SpecError(f"an argument of type {type(v).__name__} ({v!r})")

    def shape(self, n):
        val = n.meta.get("val")
        if not isinstance(val, torch.Tensor):
            return None
        return tuple(d if isinstance(d, int) else self.batch for d in val.shape)

    def layer_call(self, group: list, path: str, module) -> list[Node]:
        """One call of a layer that ports: a module node on the tensors flowing in, and the nodes reading
        its outputs (an LSTM's ``out``, ``h_n``, ``c_n``)."""
        inside = {g.name for g in group}
        ins = []
        for g in group:
            for a in g.all_input_nodes:
                if a.name not in inside and a.name not in self.state and a not in ins and \
                        isinstance(a.meta.get("val"), torch.Tensor):
                    ins.append(a)
        self.modules.setdefault(path, self.layers[type(module)](module))
        args = [self.value(ins[0])]
        if len(ins) > 1:  # a recurrent layer's given initial state: (h0, c0) / h0
            rest = [self.value(a) for a in ins[1:]]
            args.append(tuple(rest) if isinstance(module, nn.LSTM) else rest[0])
        users = [g for g in group if any(u.name not in inside for u in g.users)]
        if not users:
            raise SpecError(f"{type(module).__name__} {path}: its output is never used")
        recurrent = isinstance(module, (nn.LSTM, nn.GRU))
        head = users[0].args[0] if recurrent else users[0]  # the recurrent op itself, read by getitems
        call = Node(head.name, "module", path, tuple(args), {}, self.shape(head), self.source(head))
        if not recurrent:
            if len(users) != 1:
                raise SpecError(f"{type(module).__name__} {path}: {len(users)} outputs used")
            self.renamed[users[0].name] = Ref(call.name)
            return [call]
        out = [call]
        for u in users:  # getitem(aten.lstm, k): k = 0 the sequence, 1 / 2 the final h / c
            k = u.args[1]
            if isinstance(module, nn.LSTM) and k > 0:
                state = Node(f"{call.name}_state", "getitem", "", (), {"input": Ref(call.name), "index": 1})
                if state not in out:
                    out.append(state)
                out.append(Node(u.name, "getitem", "", (), {"input": Ref(state.name), "index": k - 1},
                                self.shape(u)))
            else:
                out.append(Node(u.name, "getitem", "", (), {"input": Ref(call.name), "index": k}, self.shape(u)))
        return out

    def op(self, n, path: str) -> Node:
        name = _aten_name(n.target) if n.target not in PYTHON else None
        make = ATEN.get(name) if name else (lambda *a: (PYTHON[n.target], dict(zip(("input", "index" if n.target
                                                                                    is operator.getitem else "other"),
                                                                                   a))))
        if make is None:
            raise SpecError(f"aten.{name} is not supported")
        op, kwargs = make(*n.args, **{k: v for k, v in n.kwargs.items()
                                      if k not in ("device", "layout", "pin_memory", "memory_format")})
        kwargs = {k: self.value(v) for k, v in kwargs.items()}
        return Node(n.name, op, path, (), normalize_args(op, (), kwargs), self.shape(n), self.source(n))

    def method(self) -> Method:
        graph = self.ep.graph_module.graph
        user_in = [s.arg.name for s in self.ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        nodes: list[Node] = []
        items: list[tuple[Any, list]] = []
        for n in graph.nodes:
            if n.op != "call_function":
                continue
            key, path, module = self.module_of(n)
            if module is not None and type(module) in self.layers:
                if items and items[-1][0] == key:
                    items[-1][1].append(n)
                else:
                    items.append((key, [n]))
            else:
                items.append((None, [n]))
        reported = set()
        calls = Counter(self.module_of(group[0])[0] for _, group in items)  # ops per call of a module
        for key, group in items:
            n = group[0]
            _, path, module = self.module_of(n)
            try:
                if key is not None:
                    nodes += self.layer_call(group, path, module)
                    continue
                if module is not None and type(module).__module__.startswith("torch.nn.") and \
                        type(module) not in self.module_ops and not isinstance(module, (nn.Sequential, nn.ModuleList,
                                                                                          nn.ModuleDict)):
                    if path not in reported:
                        reported.add(path)
                        raise SpecError(f"nn.{type(module).__name__} is not supported")
                    continue
                one_op = module is not None and type(module) in self.module_ops and calls[self.module_of(n)[0]] == 1
                nodes.append(self.op(n, path if one_op else ""))  # a module making one op is that op, by name
            except (SpecError, KeyError, TypeError, ValueError) as e:
                self.problem(n, str(e) if isinstance(e, SpecError) else f"{type(e).__name__}: {e}")
        out_node = next(n for n in graph.nodes if n.op == "output")
        outputs = [a for a, s in zip(out_node.args[0], self.ep.graph_signature.output_specs)
                   if s.kind.name == "USER_OUTPUT"]
        from torch.utils import _pytree

        return Method(tuple(user_in), tuple(nodes),
                      _pytree.tree_unflatten([self.value(a) for a in outputs], self.ep.call_spec.out_spec))


def export_method(bound: nn.Module, model: nn.Module, examples: tuple, modules: dict,
                  problems: list[str]) -> Method | None:
    """``bound`` (``model`` with the method as its forward) exported on ``examples``, the batch dimension
    symbolic, as a :class:`Method`; None (and ``problems`` say why) when torch.export cannot."""
    from torch.export import Dim, export

    batch = Dim("batch")
    dynamic = tuple({0: batch} if isinstance(e, torch.Tensor) else None for e in examples)
    try:
        with warnings.catch_warnings():  # an nn.LSTM's flat weights "assigned during export": torch's own
            warnings.simplefilter("ignore", UserWarning)
            ep = export(bound, tuple(examples), dynamic_shapes=dynamic, strict=False)
    except Exception as e:  # noqa: BLE001 - reported, never half-built
        problems.append(f"torch.export cannot export it either ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
        return None
    before = len(problems)
    method = _Program(model, ep, int(examples[0].shape[0]), modules, problems).method()
    return method if len(problems) == before else None


__all__ = ["ATEN", "export_method"]
