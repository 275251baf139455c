"""The forward stage of the divergence finder: the torch trace and the NNX records side by side.

Compared points are the values both sides have: each call of a module that exists at the same path on
both sides (its output arrays, and its input), and the model's output arrays. Everything torch computes
between compared points -- functional ops (``F.interpolate``, ``torch.exp``, ``view``...) and torch
modules with no NNX module at their path (an ``nn.ReLU()`` ported as ``jax.nn.relu``) -- is named through
the graph: where a compared value (a module's input, a container's or the model's output) was computed
by such code, a row named after those ops compares that value, before the module's own row. So a
divergence that appears in functional code is reported at the ops that made it, with their hints, and a
module is blamed only when its input agreed and its output did not. Where torch feeds a module an
earlier compared value unchanged but the flax port's input differs, a ``(flax code before M)`` row says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hints import dtype_hint, module_hint, op_hint
from .trace import CODE, CONTAINER, INPUT, MODULE, OP, TorchTrace


@dataclass
class OutputInfo:
    """What the gradient stage needs of the forward: the first output array's shapes (both in torch's
    layout) and whether the flax one is channels-last."""

    torch_shape: tuple[int, ...]
    flax_torch_shape: tuple[int, ...]
    flax_channels_last: bool


def _call_index(key: str) -> int:
    return int(key.rsplit("#", 1)[1]) if "#" in key else 1


class Rows:
    """Builds the forward rows from one torch trace and the NNX records (see the module docstring)."""

    def __init__(self, pair, trace: TorchTrace, records, reference: TorchTrace | None):
        self.pair, self.trace, self.records = pair, trace, records
        self.ref = reference.by_key() if reference is not None else {}
        self.covered = {i for i, n in enumerate(trace.nodes) if n.kind == INPUT}
        self.agreed = {i: True for i in self.covered}  # node -> whether its compared value agreed
        self.entries: list = []

    # ------------------------------------------------------------------------------ helpers ----
    def ref_value(self, key: str, path: str):
        node = self.ref.get(key)
        return None if node is None else node.leaves.get(path)

    def chain(self, ref) -> list[int]:
        """The uncompared nodes that computed the value at ``ref`` from compared values, in order."""
        out, stack = set(), [ref[0]]
        while stack:
            j = stack.pop()
            if j in self.covered or j in out:
                continue
            out.add(j)
            stack.extend(self.trace.nodes[j].sources)
        return sorted(out)

    def node_hint(self, j: int) -> str:
        n = self.trace.nodes[j]
        if n.kind == MODULE:
            return module_hint(self.pair.torch_modules[n.module])
        if n.kind == OP:
            return op_hint(n.key.split("#")[0], n.args, n.kwargs)
        if n.kind == CODE:
            return "code that torch.fx could not trace (see the note): compare it with the flax code line by line"
        return ""

    def with_dtype(self, hint: str, flax_dtype: str) -> str:
        if flax_dtype and flax_dtype != self.pair.dtype:
            return dtype_hint(self.pair.dtype, flax_dtype) + " | " + hint
        return hint

    def add(self, name, ttype, ftype, jv, tv, ref_key, *, note="", hint="", flax_dtype="", cl=False):
        ref = self.ref_value(*ref_key) if ref_key else None
        note = "; ".join(p for p in (note, flax_dtype and flax_dtype != self.pair.dtype and f"flax {flax_dtype}",
                                     cl and np.ndim(jv) >= 3 and "flax channels-last") if p)
        e = self.pair.entry("forward", name, ttype, ftype, jv, tv, note=note, ref=ref,
                            hint=self.with_dtype(hint, flax_dtype))
        self.entries.append(e)
        return e

    # ---------------------------------------------------------------------------------- rows ----
    def chain_row(self, chain: list[int], ref, jv, flax_dtype: str, where: str, cl: bool = False) -> None:
        nodes = self.trace.nodes
        hints = [h for h in dict.fromkeys(self.node_hint(j) for j in chain) if h]
        quiet = [nodes[j].key for j in chain if not self.node_hint(j)]
        if quiet and hints:
            hints.append(f"(also on the path, no known pitfall: {', '.join(quiet)})")
        hint = " | ".join(hints) or "functional code with no known pitfall: compare the flax code with torch's line by line"
        labels = ", ".join(dict.fromkeys(nodes[j].label for j in chain))
        e = self.add(", ".join(nodes[j].key for j in chain), labels, "-", jv, self.trace.value(ref),
                     (nodes[ref[0]].key, ref[1]), note=f"= {where}", hint=hint, flax_dtype=flax_dtype, cl=cl)
        self.covered.update(chain)
        self.agreed.update((j, e.ok) for j in chain)

    def compare_input(self, node, call) -> None:
        if node.input is None or call.input is None:
            return
        chain = self.chain(node.input)
        if chain:
            self.chain_row(chain, node.input, call.input, call.input_dtype, f"the input of {node.key}", call.input_cl)
            return
        src = self.trace.nodes[node.input[0]]
        if not self.agreed.get(node.input[0], False):
            return  # the value itself diverged already: its own row says so
        e = self.pair.entry("forward", f"(flax code before {node.key})", "-", call.type, call.input,
                            self.trace.value(node.input), ref=self.ref_value(src.key, node.input[1]),
                            hint=f"torch gives {node.key} the value of {src.key} unchanged and that value agrees; the "
                                 f"flax port computes {node.key}'s input differently: check the flax code between them")
        if not e.ok:
            self.entries.append(e)

    def leaf_rows(self, prefix, ttype, torch_leaves: dict, call, ref_key, hint) -> list[bool]:
        """One row per output array when both sides give the same structure, else the first arrays; their
        verdicts."""
        flax_leaves = call.leaves
        if list(torch_leaves) == list(flax_leaves):
            pairs, note = [(p, p) for p in torch_leaves], ""
        elif torch_leaves and flax_leaves:
            pairs = [(next(iter(torch_leaves)), next(iter(flax_leaves)))]
            note = f"torch gives {len(torch_leaves)} array(s), flax {len(flax_leaves)}: the first compared"
        else:
            return []
        single = len(pairs) == 1 and len(torch_leaves) == 1
        return [self.add(prefix if single or note else prefix + tp, ttype, call.type, flax_leaves[fp],
                         torch_leaves[tp], (ref_key, tp), note=note, hint=hint, flax_dtype=call.dtypes[fp],
                         cl=call.channels_last[fp]).ok for tp, fp in pairs]

    def module(self, i: int, node) -> None:
        calls = self.records.get(node.module, [])
        k = _call_index(node.key)
        if k > len(calls):
            return  # no flax module at this path (or fewer calls): compared through the next compared value
        call = calls[k - 1]
        self.compare_input(node, call)
        if node.kind == CONTAINER:
            for path, ref in node.returns:
                chain = self.chain(ref)
                if chain and path in call.leaves:
                    self.chain_row(chain, ref, call.leaves[path], call.dtypes[path], f"the output of {node.key}",
                                   call.channels_last[path])
            self.covered.update(ref[0] for _, ref in node.returns)
        ok = self.leaf_rows(node.key, node.label, node.leaves, call, node.key,
                            module_hint(self.pair.torch_modules[node.module]))
        self.covered.add(i)
        self.agreed[i] = bool(ok) and all(ok)
        for _, ref in node.returns:  # a container's output is compared as its own
            self.agreed.setdefault(ref[0], self.agreed[i])

    def outputs(self, flax_outputs, flax_structure: str, model_types) -> None:
        """The model's output arrays, leaf by leaf; when the structures differ, one entry saying so (unless
        the flax model returns a single array: the reconstruction) and the first arrays compared."""
        torch_out = self.trace.output
        flax = {p: (v, dt, cl) for p, v, cl, dt in flax_outputs}
        same = [p for p, _ in torch_out] == list(flax)
        if not same and len(flax) > 1 and len(torch_out) > 1:
            self.entries.append(self.pair.check(
                "forward", "<output>", *model_types, f"structure differs: torch {self.trace.output_structure}, "
                f"flax {flax_structure}; the first arrays compared",
                hint=f"the models return different structures (torch {self.trace.output_structure} of "
                     f"{len(torch_out)} arrays, flax {flax_structure} of {len(flax)}): return the same"))
        if same:
            pairs = [(p, ref, p) for p, ref in torch_out]
        else:
            pairs = [(*torch_out[0], next(iter(flax)))] if torch_out and flax else []
        for tp, ref, fp in pairs:
            value, dtype, cl = flax[fp]
            name = "<output>" if len(torch_out) == 1 else f"<output>{tp}"
            chain = self.chain(ref)
            if chain:
                self.chain_row(chain, ref, value, dtype, name, cl)
            self.add(name, *model_types, value, self.trace.value(ref), (self.trace.nodes[ref[0]].key, ref[1]),
                     flax_dtype=dtype, cl=cl, hint="the model output: the code after the last compared module",
                     note="" if same else f"flax {fp or 'output'}")


def forward_rows(pair, trace: TorchTrace, records, flax_outputs, flax_structure: str, reference=None):
    """The forward rows in execution order, and notes on what could not be compared."""
    rows = Rows(pair, trace, records, reference)
    for i, node in enumerate(trace.nodes):
        if node.kind in (MODULE, CONTAINER):
            rows.module(i, node)
    model_types = (type(pair.torch_model).__name__, type(pair.flax_model).__name__)
    rows.outputs(flax_outputs, flax_structure, model_types)
    notes = [trace.note] if trace.note else []
    calls: dict[str, int] = {}
    for n in trace.nodes:
        if n.kind in (MODULE, CONTAINER):
            calls[n.module] = calls.get(n.module, 0) + 1
    absent = [m for m in calls if m not in records and trace_kind(trace, m) == MODULE]
    if absent:
        notes.append("torch modules with no flax module at the same path (compared through the next compared "
                     "value, as functional code): " + ", ".join(absent))
    fewer = [f"{m}: torch calls it {c} times, flax {len(records[m])}" for m, c in calls.items()
             if m in records and len(records[m]) != c]
    if fewer:
        notes.append("calls differ: " + "; ".join(fewer))
    return rows.entries, notes


def trace_kind(trace: TorchTrace, module: str) -> str:
    return next(n.kind for n in trace.nodes if n.module == module)


def first_output(trace: TorchTrace, flax_outputs) -> OutputInfo:
    t = trace.value(trace.output[0][1]) if trace.output else np.zeros(0)
    f = flax_outputs[0] if flax_outputs else ("", np.zeros(0), False, "")
    return OutputInfo(tuple(t.shape), tuple(f[1].shape), f[2])
