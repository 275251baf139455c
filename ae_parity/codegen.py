"""A model graph as readable Flax NNX source: one class, one attribute per ported torch submodule under
its torch name, the forward translated statement by statement (each line naming the torch line it
came from), importable without torch.

The layers are written as their builders build them (``ae_jax.layers.SOURCES``: ``nnx.Linear``,
``nnx.Conv``, the torch-faithful ``BatchNorm``...), the functional code as calls of
``ae_jax.functional`` (torch's ops with torch's signatures), so the generated class and
``ae_jax.graph.GraphModule`` compute the same thing and hold the same state (a test checks both on the
published-style models). Image layers run channels-last inside (``to_channels_last`` / ``to_channels_first``
around them);
every value between them is in torch's layout, so ``view`` / ``cat`` / ``chunk`` mean what they meant.
"""

from __future__ import annotations

import keyword
import re

from ae_core.graph import OPS, Graph, Method, Ref

HEADER = '''"""{name}: a Flax NNX port written by `ae-parity port`{origin}.

Values are in torch's layout (channels first); the convolutions run channels-last inside. Random draws
of the torch forward are supplied: ``noise={{node: array}}`` ({noise}).
"""

import functools  # noqa: F401 (parameter-free modules hold their op and arguments)

import jax.numpy as jnp
from flax import nnx

from ae_jax import functional as F
from ae_jax.graph import Block
from ae_jax.layers import {layer_names}  # noqa: F401 (as the layers need)
'''


def _ident(name: str) -> str:
    name = re.sub(r"\W", "_", name)
    return f"{name}_" if keyword.iskeyword(name) or name[:1].isdigit() else name


def _attr(path: str, lists: set[str]) -> str:
    """``self.encoder[0][1]`` / ``self.fc_mu`` / ``getattr(self.block, "1")`` for a torch module path."""
    out, prefix = "self", []
    for part in path.split("."):
        parent = ".".join(prefix)
        if parent in lists:
            out += f"[{part}]"
        elif part.isidentifier() and not keyword.iskeyword(part):
            out += f".{part}"
        else:
            out = f"getattr({out}, {part!r})"
        prefix.append(part)
    return out


def _value(v) -> str:
    if isinstance(v, Ref):
        return _ident(v.name)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, tuple):
        return "(" + ", ".join(_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, slice):
        return f"slice({_value(v.start)}, {_value(v.stop)}, {_value(v.step)})"
    if v is Ellipsis:
        return "..."
    return repr(v)


def _index(v) -> str:
    """A getitem index as Python writes it: ``x[:, 1:3, None, ...]``."""
    def one(i):
        if isinstance(i, slice):
            parts = ["" if b is None else _value(b) for b in (i.start, i.stop, i.step)]
            return ":".join(parts[:2]) + (f":{parts[2]}" if parts[2] else "")
        return "None" if i is None else _value(i)
    return ", ".join(one(i) for i in v) if isinstance(v, tuple) else one(v)


def _call(graph: Graph, node, lists: set[str]) -> str:
    if node.op == "module":
        x, *rest = (_value(a) for a in node.args)
        if graph.modules[node.target].image:  # channels-last inside, torch's layout around it
            return f"to_channels_first({_attr(node.target, lists)}({', '.join([f'to_channels_last({x})', *rest])}))"
        return f"{_attr(node.target, lists)}({', '.join([x, *rest])})"
    kw = dict(node.kwargs)
    if node.target:  # a parameter-free torch module: an attribute holding its op and arguments (_module_op)
        extra = ""
        if node.op == "randn_like":
            extra = f", noise[{node.name!r}]"
        elif node.op == "dropout":
            extra = f", mask=None if self.deterministic else noise[{node.name!r}], training=not self.deterministic"
        return f"{_attr(node.target, lists)}({_value(kw[OPS[node.op].params[0]])}{extra})"
    if node.op == "getitem":
        return f"{_value(kw['input'])}[{_index(kw['index'])}]"
    if node.op in ("randn_like", "rand_like"):
        return f"F.{node.op}({_value(kw['input'])}, noise[{node.name!r}])"
    if node.op in ("randn", "rand"):
        dtype = f", dtype={kw['dtype']!r}" if kw["dtype"] else ""
        return f"F.{node.op}({_value(kw['size'])}{dtype}, noise=noise[{node.name!r}])"
    if node.op == "dropout":
        return (f"F.dropout({_value(kw['input'])}, {kw['p']!r}, mask=None if self.deterministic else "
                f"noise[{node.name!r}], training=not self.deterministic)")
    sig = OPS[node.op]
    args = [_value(kw[p]) for p in sig.params if p not in sig.defaults]  # required: positional, as torch
    args += [_value(kw[sig.varargs])] if sig.varargs else []
    for p in sig.params:  # optional: by name, where not torch's default
        if p in sig.defaults and not (kw[p] == sig.defaults[p] and type(kw[p]) is type(sig.defaults[p])):
            args.append(f"{p}={_value(kw[p])}")
    return f"F.{node.op}({', '.join(args)})"


def _method(graph: Graph, name: str, pyname: str, method: Method, lists: set[str], indent: str = "    ") -> list[str]:
    args = ", ".join(_ident(i) for i in method.inputs)
    random = any(OPS.get(n.op) and OPS[n.op].noise for n in method.nodes)
    lines = [f"{indent}def {pyname}(self, {args}, noise=None):"]
    if random:
        lines.append(f"{indent}    noise = {{}} if noise is None else noise")
    for node in method.nodes:
        where = node.source.rsplit("/", 1)[-1]
        lines.append(f"{indent}    {_ident(node.name)} = {_call(graph, node, lists)}" + (f"  # {where}" if where else ""))
    lines.append(f"{indent}    return {_value(method.output)}")
    return lines


def _module_op(node) -> str:
    """A parameter-free torch module (``nn.MaxPool2d(2, 2)``, ``nn.LeakyReLU()``) as an attribute: its op
    with the module's arguments, ``functools.partial(F.max_pool2d, kernel_size=2, stride=2)``."""
    sig, kw = OPS[node.op], dict(node.kwargs)
    args = [f"{p}={_value(kw[p])}" for p in sig.params[1:]
            if p not in sig.defaults or not (kw[p] == sig.defaults[p] and type(kw[p]) is type(sig.defaults[p]))]
    return f"functools.partial({', '.join([f'F.{node.op}', *args])})" if args else f"F.{node.op}"


def _layers(graph: Graph) -> tuple[list[str], set[str]]:
    """The ``__init__`` lines building every torch submodule under its torch path -- layers as their
    builders build them, parameter-free modules as their ops (:func:`_module_op`) -- and the paths that
    are lists."""
    from ae_core.graph import is_list
    from ae_jax.layers import SOURCES

    attrs = {}
    for path, spec in graph.modules.items():
        if type(spec) not in SOURCES:
            raise ValueError(f"{graph.name}: no source for layer {spec!r} ({path})")
        attrs[path] = SOURCES[type(spec)](spec)
    for method in graph.methods.values():
        attrs.update({n.target: _module_op(n) for n in method.nodes if n.op != "module" and n.target})
    tree: dict = {}
    for path in sorted(attrs, key=_torch_order(graph, attrs)):
        node = tree
        *heads, leaf = path.split(".")
        for h in heads:
            node = node.setdefault(h, {})
        node[leaf] = attrs[path]
    lists: set[str] = set()

    def render(sub, prefix: str, depth: int) -> str:
        pad = "    " * (depth + 2)
        if not isinstance(sub, dict):
            return sub
        items = [(k, render(v, f"{prefix}.{k}" if prefix else k, depth + 1)) for k, v in sub.items()]
        if is_list(sub):
            lists.add(prefix)
            return "nnx.List([\n" + "".join(f"{pad}    {v},\n" for _, v in items) + f"{pad}])"
        return "Block({\n" + "".join(f"{pad}    {k!r}: {v},\n" for k, v in items) + f"{pad}}})"

    lines = [f"        self.{_ident(k)} = {render(v, k, 0)}" for k, v in tree.items()]
    return lines, lists


def class_name(name: str) -> str:
    """The Python class name a graph's source gets for ``name``."""
    return _ident(name)


def _torch_order(graph: Graph, attrs):
    """An order for the attributes: numeric children by number, the others in the order the forward first
    uses anything under them (torch code usually registers its modules in the order it uses them)."""
    first: dict[str, int] = {}
    targets = [n.target for m in graph.methods.values() for n in m.nodes if n.target] + list(graph.modules)
    for path in targets:
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            first.setdefault(".".join(parts[:i]), len(first))

    def key(path: str):
        parts = path.split(".")
        return [(0, int(p)) if p.isdigit() else (1, first[".".join(parts[:i + 1])]) for i, p in enumerate(parts)]
    return key


def source(graph: Graph, *, class_name: str | None = None, origin: str = "") -> str:
    """The NNX source of ``graph`` (see the module docstring); ``origin``: where the torch model came from."""
    from ae_jax.layers import SOURCE_NAMES

    name = _ident(class_name or graph.name)
    layer_lines, lists = _layers(graph)
    noise = ", ".join(f"{k}: {kind} {shape}" for k, (kind, shape, _) in graph.noise_shapes().items()) or "none"
    used = [n for n in SOURCE_NAMES if re.search(rf"\b{n}\(", "\n".join(layer_lines))]
    names = ", ".join(sorted(used, key=str.lower) + ["to_channels_first", "to_channels_last"])
    out = [HEADER.format(name=name, origin=f" from {origin}" if origin else "", noise=noise, layer_names=names), "",
           f"class {name}(nnx.Module):",
           f'    """{graph.name}, ported from torch: the same module names, so its state_dict loads strictly."""', "",
           "    def __init__(self, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32):",
           "        rngs = nnx.Rngs(0) if rngs is None else rngs",
           "        self.deterministic = False  # eval() sets it",
           *layer_lines, ""]
    evals = {m.split("@")[0] for m in graph.methods if m.endswith("@eval")}
    for mname, method in graph.methods.items():
        base = mname.split("@")[0]
        pyname = "__call__" if base == "forward" else base
        if mname.endswith("@eval"):
            out += _method(graph, mname, f"_{base}_eval", method, lists) + [""]
            continue
        lines = _method(graph, mname, pyname, method, lists)
        if base in evals:
            args = ", ".join(_ident(i) for i in method.inputs)
            lines.insert(1, f"        if self.deterministic:\n            return self._{base}_eval({args}, noise)")
        out += lines + [""]
    return "\n".join(out).rstrip() + "\n"


__all__ = ["class_name", "source"]
