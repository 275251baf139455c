"""The model of an ``ae-parity train`` run that is not a preset: a model graph (``ae_core.graph``).

- ``--graph FILE.json``: a graph file, as ``Graph.to_json()`` writes it (e.g. of ``ae_torch.trace.trace``);
- ``--torch FILE.py:NAME`` (``--torch-kwargs JSON``): a torch ``nn.Module`` class of the user's, or a
  function returning one (``ae_parity.userfiles``, as for ``diagnose``), built under
  ``torch.manual_seed(seed)`` and traced (``ae_torch.trace``) on the first batch of the training digits in
  its per-example input shape: ``--input-shape``, else the class's ``input_shape`` attribute, else 784.

Either way the run trains the graph in both frameworks exactly as a preset trains
(``ae_core.graph_training``: the loss on its first output, the seeded initial weights of
``ae_core.init_state_dict``, the noise of ``ae_core.noise``), so ``--graph`` of a traced model and
``--torch`` of the model itself give the same run. Everything that cannot work is one UsageError line
(exit 2): an unreadable or invalid graph file, a class that cannot be built or traced, an input shape
that is not 784 values, a first output without the input's shape.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

from ae_core import UsageError
from ae_core.graph import Graph
from ae_core.layers import SpecError


def load_graph(path: str, flag: str = "--graph") -> Graph:
    """The model graph in the JSON file ``path`` (UsageError naming the file and why it cannot be read)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{flag} {path}: cannot read the file ({type(e).__name__}: {e})") from None
    try:
        return Graph.from_json(text)
    except SpecError as e:
        raise UsageError(f"{flag} {path}: {e}") from None


def parse_shape(text: str, flag: str = "--input-shape") -> tuple[int, ...]:
    """``784`` / ``1,28,28`` / ``1x28x28`` -> a per-example shape."""
    try:
        shape = tuple(int(d) for d in str(text).replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise UsageError(f"{flag} {text!r}: expected comma-separated positive ints, e.g. 784 or 1,28,28")
    return shape


def _input_shape(cls, given: str | None) -> tuple[int, ...]:
    if given is not None:
        shape, where = parse_shape(given), "--input-shape"
    else:
        shape, where = tuple(getattr(cls, "input_shape", (784,))), "the class's input_shape attribute"
    if math.prod(shape) != 784:
        raise UsageError(f"--torch: the input shape {shape} ({where}) is not the 784 values of an MNIST digit; "
                         f"give --input-shape, e.g. 784 or 1,28,28")
    return shape


def trace_torch(ref: str, kwargs: dict | None, input_shape: str | None, images, dtype: str, seed: int) -> Graph:
    """The graph of the torch model ``ref`` names (built with ``kwargs`` under ``torch.manual_seed(seed)``,
    in ``dtype``), traced on ``images`` (uint8 digits) in its input shape."""
    import torch

    from ae_core.inputs import pixels
    from ae_torch.trace import trace

    from .userfiles import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(ref, "--torch", torch.nn.Module, "torch nn.Module", kwargs, kwargs_flag="--torch-kwargs")
    shape = _input_shape(type(model), input_shape)
    dt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    x = torch.from_numpy(pixels(images, dtype).reshape(len(images), *shape))
    with contextlib.redirect_stderr(io.StringIO()):  # torch.fx prints a traceback where a forward fails
        return trace(model.to(dt).train(), x.to(dt))  # ... which PortError says in one line


def model_from_args(args, dtype: str, batch_size: int, seed: int) -> Graph | None:
    """The graph ``--graph`` or ``--torch`` asks for (None for a preset run); one of them at most, and
    never with ``--preset``. ``--torch`` is built under ``seed`` and traced on ``batch_size`` digits."""
    graph, ref = getattr(args, "graph", None), getattr(args, "torch", None)
    model = "--spec" if getattr(args, "spec", None) is not None else "--preset"
    given = [flag for flag, value in ((model, args.preset), ("--graph", graph), ("--torch", ref)) if value]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)}: give one model, --preset, --spec, --graph or --torch")
    for flag, value in (("--torch-kwargs", getattr(args, "torch_kwargs", None)),
                        ("--input-shape", getattr(args, "input_shape", None))):
        if value is not None and not ref:
            raise UsageError(f"{flag} is for a model given with --torch")
    if graph:
        return load_graph(graph)
    if not ref:
        return None
    from ae_core import mnist

    source, _ = mnist.ensure(args.data_dir, args.data)
    images = mnist.load("train", source, args.data_dir).images[:batch_size]
    return trace_torch(ref, args.torch_kwargs, args.input_shape, images, dtype, seed)


__all__ = ["load_graph", "model_from_args", "parse_shape", "trace_torch"]
