"""The torch side of the divergence finder: every value of one forward, in execution order.

:func:`trace_torch` traces the forward with ``torch.fx`` (a ``symbolic_trace`` tracer that also notes what
each non-leaf module -- a Sequential, a user block -- takes and returns) and runs the graph once, keeping
the output of every node that depends on the input: module calls (``conv1``, ``pool#2`` for a module's
second call), functional ops (``interpolate``, ``leaky_relu``, ``exp``, ``view``, ``mul#2``...) and the
modules that contain them. Each node knows which earlier nodes it consumed, so the finder can name the
functional code between two compared points. Where tracing fails (data-dependent control flow, say), it
falls back to module hooks: every module's input and output, found by tensor identity, and the code
between modules appears as one unnamed ``(code before conv2)`` node; a note says why.

A value is referred to as ``(node index, path)``: the path of an array inside the node's (nested) output,
``""`` for a plain tensor, ``"[1][0]"`` for ``out[1][0]``, ``"['mu']"`` for a dict entry.
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ae_core import UsageError

INPUT, MODULE, CONTAINER, OP, CODE = "input", "module", "container", "op", "code"
Ref = tuple[int, str]


def leaves(obj, is_leaf: Callable[[Any], bool], path: str = "") -> list[tuple[str, Any]]:
    """``[(path, leaf)]`` of a nested tuple / list / dict, in order (dicts in insertion order)."""
    if is_leaf(obj):
        return [(path, obj)]
    if isinstance(obj, (tuple, list)):
        return [x for i, o in enumerate(obj) for x in leaves(o, is_leaf, f"{path}[{i}]")]
    if isinstance(obj, dict):
        return [x for k, o in obj.items() for x in leaves(o, is_leaf, f"{path}[{k!r}]")]
    return []


def is_array(obj) -> bool:
    return hasattr(obj, "shape") and hasattr(obj, "dtype") and not isinstance(obj, type)


def structure(obj) -> str:
    """A short description of an output's structure: "array", "list[5]", "tuple[array, tuple[2]]"..."""
    if is_array(obj):
        return "array"
    for kind in (list, tuple, dict):  # (torch.fx gives immutable_list / immutable_dict)
        if isinstance(obj, kind):
            return f"{kind.__name__}[{len(obj)}]"
    return type(obj).__name__


def numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


@dataclass
class TNode:
    """One value of the torch forward."""

    key: str  # "conv1", "pool#2", "leaky_relu", "x" ...
    kind: str  # input / module / container / op / code (untraced code, hooks fallback)
    label: str  # Conv2d, F.interpolate, Tensor.view, ...
    module: str | None = None  # module / container: its name
    leaves: dict[str, np.ndarray] = field(default_factory=dict)  # output arrays by path
    sources: list[int] = field(default_factory=list)  # op / code: the nodes it consumed
    input: Ref | None = None  # module / container: its first tensor argument
    returns: list[tuple[str, Ref]] = field(default_factory=list)  # container: where each output leaf comes from
    args: tuple = ()  # op: its arguments, tensors replaced by None (for hints)
    kwargs: dict = field(default_factory=dict)
    torch_dtype: str = ""


@dataclass
class TorchTrace:
    nodes: list[TNode]
    output: list[tuple[str, Ref]]  # the model output's leaves
    output_structure: str
    note: str = ""  # why the fallback was used

    def value(self, ref: Ref) -> np.ndarray:
        return self.nodes[ref[0]].leaves[ref[1]]

    def by_key(self) -> dict[str, TNode]:
        return {n.key: n for n in self.nodes}


class _Counter:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def key(self, name: str) -> str:
        self.counts[name] = self.counts.get(name, 0) + 1
        k = self.counts[name]
        return name if k == 1 else f"{name}#{k}"


def _op_name(node) -> tuple[str, str]:
    """(source name, label) of a call_function / call_method node: ("interpolate", "F.interpolate")."""
    import torch

    if node.op == "call_method":
        return node.target, f"Tensor.{node.target}"
    target = node.target
    name = getattr(target, "__name__", str(target))
    if getattr(torch.nn.functional, name, None) is target:
        return name, f"F.{name}"
    if getattr(torch, name, None) is target:
        return name, f"torch.{name}"
    if getattr(operator, name, None) is target:
        return name, f"operator.{name}"
    return name, f"{getattr(target, '__module__', '') or ''}.{name}".lstrip(".")


def _tracer_class():
    import torch.fx as fx

    class Tracer(fx.Tracer):
        """symbolic_trace's tracer, also noting each non-leaf module call: (name, args, returned, last node)."""

        def __init__(self):
            super().__init__()
            self.containers: list[tuple[str, Any, Any, Any]] = []

        def call_module(self, m, forward, args, kwargs):
            out = super().call_module(m, forward, args, kwargs)
            name = self.path_of_module(m)
            if not self.is_leaf_module(m, name):
                self.containers.append((name, args, out, next(reversed(self.graph.nodes))))
            return out

    return Tracer


def forward_args(model, kwargs: dict) -> tuple[list[str], dict[str, Any]]:
    """The forward's parameter names after the input, and the defaults fixed for the tracing (those not
    supplied); a parameter without a default that is not supplied is an error."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    names, concrete = [], {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        names.append(p.name)
        if p.name not in kwargs:
            if p.default is inspect.Parameter.empty:
                raise UsageError(f"{type(model).__name__}.forward needs {p.name!r}: pass it in forward_kwargs "
                                 f"(ae-parity diagnose: --noise {p.name}=SHAPE for a standard normal array)")
            concrete[p.name] = p.default
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise UsageError(f"{type(model).__name__}.forward takes no {unknown}")
    return names, concrete


def trace_torch(model, x, kwargs: dict | None = None) -> tuple[Any, TorchTrace]:
    """Run ``model(x, **kwargs)`` once, recording every value (see the module docstring): (output, trace)."""
    import torch.fx as fx

    kwargs = dict(kwargs or {})
    names, concrete = forward_args(model, kwargs)
    try:
        tracer = _tracer_class()()
        graph = tracer.trace(model, concrete_args=concrete or None)
        gm = fx.GraphModule(tracer.root, graph)
    except Exception as e:  # noqa: BLE001 - any tracing failure falls back to hooks
        note = (f"torch.fx cannot trace {type(model).__name__}.forward ({type(e).__name__}: {str(e)[:160]}); "
                f"module hooks used instead: the code between modules is compared but not named")
        return _hook_trace(model, x, kwargs, note)
    values = [x] + [kwargs.get(n, concrete.get(n)) for n in names]
    try:
        return _GraphRun(model, gm, tracer.containers).run(values)
    except Exception:
        # The traced graph is generated code: run the model's own forward so that the error surfaces
        # from the user's source lines (the CLI names the file and line); re-raise if it runs.
        model(x, **kwargs)
        raise


class _GraphRun:
    """One interpreted run of a traced graph, building the :class:`TNode` list."""

    def __init__(self, root, gm, containers):
        self.root, self.gm, self.nodes, self.refs = root, gm, [], {}  # refs: fx node -> [(path in its value, Ref)]
        self.after: dict[Any, list] = {}
        for c in containers:
            self.after.setdefault(c[3], []).append(c)
        self.count = _Counter()
        self.output = None

    def add(self, node: TNode, value) -> int:
        node.leaves = {p: numpy(v) for p, v in leaves(value, _is_tensor)}
        node.torch_dtype = str(next(iter(node.leaves.values())).dtype) if node.leaves else ""
        self.nodes.append(node)
        return len(self.nodes) - 1

    def refs_of(self, obj) -> list[tuple[str, Ref]]:
        """The refs of every array inside ``obj`` (a structure of fx nodes / proxies / constants)."""
        import torch.fx as fx

        out = []
        for path, n in leaves(obj, lambda o: isinstance(o, (fx.Node, fx.Proxy))):
            n = n.node if isinstance(n, fx.Proxy) else n
            out += [(path + sub, ref) for sub, ref in self.refs.get(n, [])]
        return out

    def sources(self, node) -> list[int]:
        return sorted({ref[0] for a in node.all_input_nodes for _, ref in self.refs.get(a, [])})

    def on_node(self, n, value) -> None:
        if n.op == "placeholder":
            if _is_tensor(value):
                i = self.add(TNode(n.target, INPUT, "input"), value)
                self.refs[n] = [("", (i, ""))]
        elif n.op == "output":
            self.output = self.refs_of(n.args[0])
        elif n.op == "call_module":
            if not self.sources(n):
                return
            module = self.gm.get_submodule(n.target)
            inputs = self.refs_of((n.args, n.kwargs))
            i = self.add(TNode(self.count.key(n.target), MODULE, type(module).__name__, n.target,
                               sources=self.sources(n), input=inputs[0][1] if inputs else None), value)
            self.refs[n] = [(p, (i, p)) for p in self.nodes[i].leaves]
        elif n.op in ("call_function", "call_method") and self.sources(n):
            self.on_op(n, value)
        for name, args, returned, _ in self.after.get(n, []):
            self.add_container(name, args, returned)

    def on_op(self, n, value) -> None:
        source = self.refs.get(n.args[0], []) if n.target is operator.getitem else [("", None)]
        if not any(p == "" for p, _ in source):  # picks from a tuple / list / dict: an alias, not an op
            key = n.args[1]
            prefix = f"[{key!r}]" if isinstance(key, str) else f"[{key}]"
            self.refs[n] = [(p[len(prefix):], ref) for p, ref in source if p == prefix or p.startswith(prefix + "[")]
            return
        if not leaves(value, _is_tensor):
            return  # sizes, shapes, None
        op, label = _op_name(n)
        consts = tuple(None if _has_node(a) else a for a in n.args)
        kw = {k: (None if _has_node(v) else v) for k, v in n.kwargs.items()}
        i = self.add(TNode(self.count.key(op), OP, label, sources=self.sources(n), args=consts, kwargs=kw), value)
        self.refs[n] = [(p, (i, p)) for p in self.nodes[i].leaves]

    def add_container(self, name, args, returned) -> None:
        inputs, rets = self.refs_of(args), self.refs_of(returned)
        node = TNode(self.count.key(name), CONTAINER, type(self.root.get_submodule(name)).__name__, name,
                     input=inputs[0][1] if inputs else None, returns=rets)
        node.leaves = {p: self.nodes[r[0]].leaves[r[1]] for p, r in rets}
        self.nodes.append(node)

    def run(self, values) -> tuple[Any, TorchTrace]:
        import torch.fx as fx

        run = self

        class Recorder(fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                run.on_node(n, out)
                return out

        out = Recorder(self.gm).run(*values)
        return out, TorchTrace(self.nodes, self.output or [], structure(out))


def _is_tensor(obj) -> bool:
    import torch

    return isinstance(obj, torch.Tensor)


def _has_node(obj) -> bool:
    import torch.fx as fx

    return bool(leaves(obj, lambda o: isinstance(o, fx.Node)))


# ------------------------------------------------------------------------------- hooks fallback ----
def _hook_trace(model, x, kwargs: dict, note: str) -> tuple[Any, TorchTrace]:
    """Module hooks: every module call's input and outputs, linked by tensor identity."""
    nodes: list[TNode] = []
    known: dict[int, tuple[Any, Ref]] = {}  # id(tensor) -> (tensor, ref): the first node that produced it
    count, pending = _Counter(), {}
    children = {name for name, m in model.named_modules() if any(True for _ in m.children())}

    def ref_of(t, where: str) -> Ref:
        if id(t) not in known:  # made by code the hooks do not see (a second such value there: "#2")
            key = count.key(f"(code before {where})")
            nodes.append(TNode(key, CODE, "(untraced code)", leaves={"": numpy(t)}))
            known[id(t)] = (t, (len(nodes) - 1, ""))
        return known[id(t)][1]

    def register(value, i: int) -> None:  # the latest producer: an in-place module (ReLU(inplace=True)) wins
        for p, t in leaves(value, _is_tensor):
            known[id(t)] = (t, (i, p))

    for name, t in [("x", x), *kwargs.items()]:
        if _is_tensor(t):
            nodes.append(TNode(name, INPUT, "input", leaves={"": numpy(t)}))
            register(t, len(nodes) - 1)

    def pre(name):
        def hook(mod, args):
            key = count.key(name)
            first = leaves(args, _is_tensor)
            pending.setdefault(name, []).append((key, ref_of(first[0][1], key) if first else None))
        return hook

    def post(name):
        def hook(mod, args, out):
            key, inp = pending[name].pop()
            outs = leaves(out, _is_tensor)
            if name in children:
                rets = [(p, ref_of(t, f"the output of {key}")) for p, t in outs]
                node = TNode(key, CONTAINER, type(mod).__name__, name, input=inp, returns=rets)
                node.leaves = {p: nodes[r[0]].leaves[r[1]] for p, r in rets}
                nodes.append(node)
                return
            nodes.append(TNode(key, MODULE, type(mod).__name__, name, input=inp, sources=[inp[0]] if inp else [],
                               leaves={p: numpy(t) for p, t in outs}))
            register(out, len(nodes) - 1)
        return hook

    handles = []
    for name, module in model.named_modules():
        if name:
            handles += [module.register_forward_pre_hook(pre(name)), module.register_forward_hook(post(name))]
    try:
        out = model(x, **kwargs)
    finally:
        for h in handles:
            h.remove()
    output = [(p, ref_of(t, "the output")) for p, t in leaves(out, _is_tensor)]
    return out, TorchTrace(nodes, output, structure(out), note)
