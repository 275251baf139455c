"""One report type for every bench mode: header fields, the per-batch entries, the text table logged per
batch, the markdown tables of docs/benchmarks.md, and the JSON file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

KINDS = ("side_by_side", "jax", "sweep")

# JSON keys per kind, in the order the reports have always been written ("kind" first, new for side_by_side)
_KEYS = {"side_by_side": ("kind", "preset", "epochs_timed", "batches", "machine", "data", "n_train", "versions",
                          "skipped"),
         "jax": ("kind", "preset", "n_train", "data", "epochs_timed", "machine", "batches"),
         "sweep": ("kind", "preset", "models", "n_train", "data", "epochs_timed", "run_epochs", "machine", "batches")}


@dataclass
class BenchReport:
    """A bench run. ``kind``: "side_by_side" (``run_bench``: torch and JAX in worker processes), "jax"
    (``run_jax_bench``: ae_jax alone) or "sweep" (``run_sweep_bench``: a sweep against sequential runs).
    ``batches``: one entry (a JSON-ready dict) per batch size, with its ``results`` (one dict per variant).
    ``versions`` is side_by_side's (jax and torch; the others keep jax's in ``machine``); ``models`` and
    ``run_epochs`` are the sweep's."""

    kind: str
    preset: str
    epochs_timed: int
    machine: dict
    data: str | None = None
    n_train: int | None = None
    batches: list[dict] = field(default_factory=list)
    versions: dict | None = None
    models: int | None = None
    run_epochs: int | None = None
    skipped: list[str] = field(default_factory=list)  # variants left out, each with why

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown bench report kind {self.kind!r}; expected one of {KINDS}")

    # ------------------------------------------------------------------------------------- JSON ----
    def to_dict(self) -> dict:
        """The JSON report: the keys of the report's kind (``_KEYS``)."""
        return {key: getattr(self, key) for key in _KEYS[self.kind]}

    @classmethod
    def from_dict(cls, d: dict) -> BenchReport:
        """A report from its JSON (side-by-side reports written before "kind" existed have none)."""
        return cls(**{"kind": "side_by_side", **d})

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    # ------------------------------------------------------------------------------------- text ----
    def batch_text(self, entry: dict) -> str:
        """The text table of one batch entry (what the bench logs as each batch size finishes)."""
        return {"side_by_side": _side_by_side_text, "jax": _jax_text, "sweep": _sweep_text}[self.kind](self, entry)

    def text(self) -> str:
        """Every batch's text table."""
        return "\n".join(self.batch_text(entry) for entry in self.batches)

    def markdown(self) -> str:
        """The report as markdown tables (for docs/benchmarks.md)."""
        if self.kind == "side_by_side":
            return _side_by_side_markdown(self)
        return "\n".join(_jax_header(self) + (_jax_table(self) if self.kind == "jax" else _sweep_table(self)))


# --------------------------------------------------------------------------------- side by side ----
def _side_by_side_text(report: BenchReport, entry: dict) -> str:
    lines = [f"\nbatch {entry['batch_size']} ({entry['steps']} steps/epoch)",
             f"{'variant':<28} {'ms/epoch':>9} {'samples/s':>11} {'vs best ae_torch eager':>23} {'compile':>8}"]
    for r in entry["results"]:
        comp = f"{r['compile_s']:.2f}s" if r["compile_s"] is not None else ""
        lines.append(f"{r['variant']:<28} {r['ms_per_epoch']:>9.1f} {r['samples_per_s']:>11,.0f} "
                     f"{r['vs_torch_eager']:>22.2f}x {comp:>8}")
    lines.append(f"FLOP floor: {entry['flops_per_epoch'] / 1e9:.2f} GFLOP/epoch at the measured matmul rate = "
                 f"{entry['floor_ms']:.1f} ms; scan epoch = {entry['scan_vs_floor']:.2f}x the floor"
                 + (f"; the same GEMMs alone take {entry['gemm_only_ms']:.1f} ms "
                    f"(scan epoch = {entry['scan_vs_gemm_only']:.2f}x that)" if entry["gemm_only_ms"] else "")
                 + (f"; {entry['scan_vs_tutorial']:.1f}x faster than the tutorial loop" if "scan_vs_tutorial" in entry
                    else ""))
    if entry.get("jit_step_vs_bare") is not None:
        lines.append(f"ae_jax jit step = {entry['jit_step_vs_bare']:.3f}x its compiled step function called bare")
    return "\n".join(lines)


def _side_by_side_markdown(report: BenchReport) -> str:
    m, versions = report.machine, report.versions
    out = [f"preset `{report.preset}`, MNIST {report.data} ({report.n_train:,} training examples), float32, "
           f"Adam, median of {report.epochs_timed} epochs after a warm-up epoch, each framework in its own worker "
           f"process, epochs round-robin; {m['jax_devices']}, torch threads "
           f"{m['torch_threads']}, measured matmul rate {m['matmul_gflops']:.0f} GFLOP/s; "
           f"jax {versions['jax']}, torch {versions['torch']}", ""]
    out += [f"(skipped: {why})" for why in report.skipped] + ([""] if report.skipped else [])
    for entry in report.batches:
        gemm = (f"; the model's GEMMs alone, at their shapes: {entry['gemm_only_ms']:.1f} ms, scan epoch = "
                f"{entry['scan_vs_gemm_only']:.2f}x that" if entry["gemm_only_ms"] else "")
        out += [f"**batch {entry['batch_size']}** ({entry['steps']} steps/epoch; FLOP floor {entry['floor_ms']:.1f} ms, "
                f"scan epoch = {entry['scan_vs_floor']:.2f}x floor{gemm})", "",
                "| variant | ms/epoch | samples/s | vs best ae_torch eager | compile |", "|---|---:|---:|---:|---:|"]
        for r in entry["results"]:
            comp = f"{r['compile_s']:.2f} s" if r["compile_s"] is not None else ""
            out.append(f"| {r['variant']} | {r['ms_per_epoch']:.1f} | {r['samples_per_s']:,.0f} | "
                       f"{r['vs_torch_eager']:.2f}x | {comp} |")
        if entry.get("jit_step_vs_bare") is not None:
            out.append(f"ae_jax jit step / its compiled function bare: {entry['jit_step_vs_bare']:.3f}x")
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------ JAX alone, sweep ----
def _jax_text(report: BenchReport, entry: dict) -> str:
    return (f"batch {entry['batch_size']} ({entry['steps']} steps/epoch, {report.n_train:,} examples): "
            + ", ".join(f"{r['variant']} {r['ms_per_epoch']:.1f} ms" for r in entry["results"])
            + f"; compile {entry['compile_s']:.2f} s")


def _sweep_text(report: BenchReport, entry: dict) -> str:
    lines = [f"\nbatch {entry['batch_size']} ({entry['steps']} steps/epoch, {report.models} models; compile: "
             f"solo {entry['solo_compile_s']:.2f} s, sweep {entry['sweep_compile_s']:.2f} s)",
             f"{'variant':<28} {'ms/epoch':>9} {'model-samples/s':>16} {'vs sequential':>14} "
             f"{'end to end, ' + str(report.run_epochs) + ' epochs':>24}"]
    for r in entry["results"]:
        lines.append(f"{r['variant']:<28} {r['ms_per_epoch_all_models']:>9.1f} {r['model_samples_per_s']:>16,.0f} "
                     f"{r['vs_sequential']:>13.2f}x {r['end_to_end_s']:>15.2f} s ({r['end_to_end_vs_sequential']:.2f}x)")
    lines.append(f"FLOP floor of {report.models} models' epoch: {entry['flop_floor_ms']:.1f} ms at the measured matmul "
                 f"rate ({report.machine['matmul_gflops']:.0f} GFLOP/s): no sweep can beat the sequential runs by "
                 f"more than {entry['max_speedup']:.2f}x here")
    return "\n".join(lines)


def _jax_header(report: BenchReport) -> list[str]:
    m = report.machine
    return [f"preset `{report.preset}`, {report.n_train:,} MNIST-shaped examples ({report.data} digits"
            f"{', repeated' if report.n_train > 5000 else ''}), float32, Adam, median of {report.epochs_timed} "
            f"epochs after a warm-up; {m['device_kind']} ({m['devices'][0]}), jax {m['jax']}", ""]


def _jax_table(report: BenchReport) -> list[str]:
    out = ["| batch | variant | ms/epoch | samples/s | compile (scan, AOT) |", "|---:|---|---:|---:|---:|"]
    for e in report.batches:
        for i, r in enumerate(e["results"]):
            compile_s = f"{e['compile_s']:.2f} s" if i == 0 else ""
            out.append(f"| {e['batch_size']} | {r['variant']} | {r['ms_per_epoch']:.1f} | "
                       f"{r['samples_per_s']:,.0f} | {compile_s} |")
    return out


def _sweep_table(report: BenchReport) -> list[str]:
    out = [f"| batch | variant | ms/epoch ({report.models} models) | model-samples/s | vs sequential | "
           f"end to end, {report.run_epochs} epochs (compile included) |", "|---:|---|---:|---:|---:|---:|"]
    for e in report.batches:
        for r in e["results"]:
            out.append(f"| {e['batch_size']} | {r['variant']} | {r['ms_per_epoch_all_models']:.1f} | "
                       f"{r['model_samples_per_s']:,.0f} | {r['vs_sequential']:.2f}x | {r['end_to_end_s']:.2f} s "
                       f"({r['end_to_end_vs_sequential']:.2f}x) |")
        out.append(f"| {e['batch_size']} | compile; FLOP floor of the {report.models} models' epoch | solo "
                   f"{e['solo_compile_s']:.2f} s, sweep {e['sweep_compile_s']:.2f} s | floor {e['flop_floor_ms']:.1f} ms"
                   f" | at most {e['max_speedup']:.2f}x possible | |")
    return out
