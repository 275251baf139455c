"""What to check where the divergence finder points: hints from the torch module's or op's own arguments.

The registry's hints (``ae_core.layers``: one per layer kind) say what usually goes wrong for a layer
type; here they are completed with the numbers of the module at hand (its padding, eps, momentum,
slope, interpolation mode...), written as the Flax call that would match, and the functional ops of a
torch forward (``F.interpolate``, ``F.leaky_relu``, ``torch.exp``, ``view``...) get their own. A hint
never suggests a fix that cannot be the cause: a non-square Linear's kernel layout was checked when it
loaded (weight.T is the only way it fits), so its hint does not name the layout.
"""

from __future__ import annotations

from typing import Any

RANDOM_HINT = ("the torch forward draws random numbers, so no port can match it: supply the noise (pass it as an "
               "argument, e.g. forward(x, eps) with compare(..., forward_kwargs={'eps': eps}), the same array to "
               "both models), or compare in eval mode if the sampling only happens in training (pitfall 14)")


def hints() -> dict[str, str]:
    """torch module type -> what usually goes wrong there (numbers refer to docs/porting.md): each layer
    kind's hints from the registry (``ae_core.layers``), and those of torch layers that have no kind yet."""
    from ae_core import LAYER_KINDS

    out = {name: text for kind in LAYER_KINDS.values() for name, text in kind.hints.items()}
    out.setdefault("LayerNorm", "LayerNorm: epsilon differs, torch 1e-5 vs Flax 1e-6 (pitfall 6)")
    return out


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _linear(m) -> str:
    i, o = m.in_features, m.out_features
    if i == o:
        return (f"Linear {i} -> {o} is square, so a kernel loaded as weight instead of weight.T fits too: the Flax "
                f"kernel is (in, out) = torch weight.T (pitfall 1)")
    return (f"Linear {i} -> {o}: its kernel layout was checked when it loaded (only one layout fits a non-square "
            f"kernel); check its bias (use_bias), its dtype (dtype= / param_dtype=) and what the flax code feeds it")


def _conv(m) -> str:
    if isinstance(m.padding, str):
        pad = f"padding={m.padding.upper()!r} (torch {m.padding!r}; 'same' puts an odd total after)"
    else:
        pad = f"padding=({', '.join(f'({p}, {p})' for p in m.padding)}{',' if len(m.padding) == 1 else ''})"
    if m.padding_mode != "zeros":
        pad += f" after jnp.pad(mode={_PAD_MODES.get(m.padding_mode, m.padding_mode)!r}) (torch {m.padding_mode!r})"
    extra = "".join(f", {k}={v}" for k, v in (("kernel_dilation", tuple(m.dilation)),
                                              ("feature_group_count", m.groups)) if v not in ((1,) * len(m.dilation), 1))
    return (f"here nnx.Conv({m.in_channels}, {m.out_channels}, {tuple(m.kernel_size)}, strides={tuple(m.stride)}, "
            f"{pad}{extra})")


_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _conv_transpose(m) -> str:
    pads = [(d * (k - 1) - p, d * (k - 1) - p + op) for k, p, op, d in
            zip(m.kernel_size, _pair(m.padding), _pair(m.output_padding), _pair(m.dilation))]
    dilation = "" if set(_pair(m.dilation)) == {1} else f", kernel_dilation={tuple(m.dilation)}"
    text = (f"here nnx.ConvTranspose({m.in_channels}, {m.out_channels}, {tuple(m.kernel_size)}, "
            f"strides={tuple(m.stride)}, padding=({', '.join(map(str, pads))}){dilation}, transpose_kernel=True)")
    if min(lo for lo, _ in pads) < 0:
        text += "; a negative padding: torch's padding exceeds dilation * (kernel_size - 1) and crops the output"
    if m.groups != 1:
        text += (f"; groups={m.groups}: nnx.ConvTranspose has no feature groups (ae_jax.layers.TorchConvTranspose: "
                 f"a grouped conv of the stride-dilated input with the flipped kernel)")
    return text


def _batchnorm(m) -> str:
    flax_m = ("momentum=<none: torch's momentum=None is the cumulative average, factor 1 / num_batches_tracked>"
              if m.momentum is None else f"momentum={1 - m.momentum:g}")
    affine = "" if m.affine else ", use_scale=False, use_bias=False (torch affine=False: no weight, no bias)"
    stats = "" if m.track_running_stats else ("; track_running_stats=False: the batch's statistics in BOTH modes "
                                              "(use_running_average=False always), no running buffers")
    return (f"here torch eps={m.eps:g}, momentum={m.momentum}, affine={m.affine}: Flax epsilon={m.eps:g}, "
            f"{flax_m} (Flax's momentum is 1 - torch's){affine}{stats}; nnx.BatchNorm stores the BIASED variance "
            f"in train mode and keeps float32 statistics (ae_jax.layers.BatchNorm follows torch)")


def _pool(m) -> str:
    k, s, p = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
    fn = "max_pool" if "Max" in type(m).__name__ else "avg_pool"
    text = (f"{type(m).__name__}(kernel_size={m.kernel_size}, stride={m.stride}, padding={m.padding}, "
            f"ceil_mode={m.ceil_mode}): nnx.{fn}(x, window_shape={k}, strides={s}, "
            f"padding=(({p[0]}, {p[0]}), ({p[1]}, {p[1]})))")
    if m.ceil_mode:
        text += "; ceil_mode=True keeps a partial last window: pad the far side by stride - 1 more"
    if fn == "avg_pool":
        text += f"; count_include_pad={m.count_include_pad} (nnx.avg_pool counts the padding unless count_include_pad=False)"
    return text + " (channels-last input)"


def _upsample(m) -> str:
    return _interpolate_text(m.mode, m.align_corners, m.scale_factor, m.size)


def _interpolate_text(mode, align_corners, scale_factor, size) -> str:
    what = f"scale_factor={scale_factor}" if scale_factor is not None else f"size={size}"
    text = f"interpolate({what}, mode={mode!r}, align_corners={align_corners}): "
    if mode == "nearest":
        text += ("torch 'nearest' repeats pixels (index floor(i * in / out)): jnp.repeat(x, s, axis) on the "
                 "spatial axes for an integer scale; jax.image.resize(method='nearest') rounds half-pixel centres")
    else:
        text += (f"jax.image.resize(x, shape, method={'linear' if 'linear' in mode else mode!r}, antialias=False) "
                 f"matches align_corners=False; align_corners=True has no JAX flag (scale the coordinates)")
    return text + " (pitfall 13)"


def _slope(name, value, default, flax) -> str:
    return f"{name}: torch {value:g} here, {flax} (pass it: the JAX default is {default:g})"


_MODULE_HINTS = {
    "Linear": _linear,
    "Conv2d": _conv, "Conv1d": _conv,
    "ConvTranspose2d": _conv_transpose,
    "BatchNorm1d": _batchnorm, "BatchNorm2d": _batchnorm,
    "LayerNorm": lambda m: f"here epsilon={m.eps:g}, over the last axes {tuple(m.normalized_shape)}",
    "GroupNorm": lambda m: f"here num_groups={m.num_groups}, epsilon={m.eps:g}, affine={m.affine}",
    "Embedding": lambda m: f"here padding_idx={m.padding_idx} (its row: no gradient in torch)",
    "LSTM": lambda m: f"here batch_first={m.batch_first}, num_layers={m.num_layers}, bias={m.bias}",
    "GRU": lambda m: f"here batch_first={m.batch_first}, num_layers={m.num_layers}, bias={m.bias}",
    "MaxPool2d": _pool, "AvgPool2d": _pool,
    "Upsample": _upsample,
    "LeakyReLU": lambda m: _slope("negative_slope", m.negative_slope, 0.01,
                                  f"jax.nn.leaky_relu(x, negative_slope={m.negative_slope:g})"),
    "ELU": lambda m: _slope("alpha", m.alpha, 1.0, f"jax.nn.elu(x, alpha={m.alpha:g})"),
    "GELU": lambda m: f"here approximate={m.approximate!r}: jax.nn.gelu(x, approximate={m.approximate == 'tanh'})",
    "Softplus": lambda m: f"Softplus(beta={m.beta:g}, threshold={m.threshold:g}): jax.nn.softplus has no beta: "
                          f"softplus(beta * x) / beta",
}


def module_hint(module) -> str:
    """What to check at this torch module: the registry's hint for its type, with its own arguments."""
    name = type(module).__name__
    parts = [] if name == "Linear" else [hints().get(name, "")]
    if name in _MODULE_HINTS:
        parts.append(_MODULE_HINTS[name](module))
    text = "; ".join(p for p in parts if p)
    return text or f"{name}: no known pitfall; compare its flax code line by line"


# ------------------------------------------------------------------------------- functional ops ----
_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
_AXIS_OPS = {"cat", "concat", "stack", "chunk", "split", "sum", "mean", "softmax", "log_softmax", "amax", "max",
             "min", "std", "var", "flip", "roll", "squeeze", "unsqueeze"}
_NO_PITFALL = {"add", "sub", "mul", "truediv", "neg", "relu", "sigmoid", "tanh", "clamp", "clip", "abs", "pow",
               "sqrt", "square", "getitem", "contiguous", "float", "double", "to", "iadd", "imul"}


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None):
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


def _op_pool(op, args, kwargs) -> str:
    vals = {n: _arg(args, kwargs, i + 1, n) for i, n in enumerate(_POOL_ARGS)}
    k = vals["kernel_size"]
    s = vals["stride"] or k
    p = vals["padding"] or 0
    fn = "max_pool" if "max" in op else "avg_pool"
    text = (f"{op}(kernel_size={k}, stride={s}, padding={p}, ceil_mode={bool(vals['ceil_mode'])}): "
            f"nnx.{fn}(x, window_shape={_pair(k)}, strides={_pair(s)}, padding=(({_pair(p)[0]}, {_pair(p)[0]}), "
            f"({_pair(p)[1]}, {_pair(p)[1]}))) on channels-last input; check the padding and ceil_mode")
    return text


def _op_interpolate(op, args, kwargs) -> str:
    return _interpolate_text(_arg(args, kwargs, 3, "mode", "nearest"), _arg(args, kwargs, 4, "align_corners"),
                             _arg(args, kwargs, 2, "scale_factor"), _arg(args, kwargs, 1, "size"))


def _op_norm(op, args, kwargs) -> str:
    if op == "batch_norm":
        eps, m = _arg(args, kwargs, 7, "eps", 1e-5), _arg(args, kwargs, 6, "momentum", 0.1)
        return (f"batch_norm(eps={eps:g}, momentum={m:g}): Flax epsilon={eps:g}, momentum={1 - m:g}; "
                f"training={_arg(args, kwargs, 5, 'training', False)} (pitfall 5)")
    return f"{op}(eps={_arg(args, kwargs, 3 if op == 'layer_norm' else 4, 'eps', 1e-5):g}): Flax epsilon defaults differ (pitfall 6)"


def _op_hint(op: str, args: tuple, kwargs: dict) -> str:
    if op in ("interpolate", "upsample", "upsample_nearest", "upsample_bilinear"):
        return _op_interpolate(op, args, kwargs)
    if op == "leaky_relu":
        s = _arg(args, kwargs, 1, "negative_slope", 0.01)
        return _slope("leaky_relu negative_slope", s, 0.01, f"jax.nn.leaky_relu(x, negative_slope={s:g})")
    if op == "elu":
        a = _arg(args, kwargs, 1, "alpha", 1.0)
        return _slope("elu alpha", a, 1.0, f"jax.nn.elu(x, alpha={a:g})")
    if op == "gelu":
        a = _arg(args, kwargs, 1, "approximate", "none")
        return f"gelu(approximate={a!r}): jax.nn.gelu(x, approximate={a == 'tanh'}) (jax's default is True; pitfall 7)"
    if op in ("max_pool2d", "avg_pool2d", "max_pool1d", "avg_pool1d"):
        return _op_pool(op, args, kwargs)
    if op in ("batch_norm", "layer_norm", "group_norm", "instance_norm"):
        return _op_norm(op, args, kwargs)
    if op == "exp":
        return "exp: check its argument -- a VAE's standard deviation is exp(0.5 * logvar), not exp(logvar)"
    if op in ("view", "reshape", "flatten", "unflatten"):
        return (f"{op}: torch orders elements channels-first (NCHW); reshaping an NHWC flax tensor needs a "
                f"transpose to NCHW first (flatten) or after (unflatten) (pitfall 3)")
    if op in ("permute", "transpose", "movedim", "t"):
        return f"{op}: the flax tensor is channels-last where torch's is channels-first: its axes differ"
    if op in _AXIS_OPS:
        return f"{op}: torch's channel axis is 1, a channels-last flax tensor's is -1: check dim="
    if op in ("randn_like", "rand_like", "randn", "rand", "normal", "bernoulli", "dropout", "multinomial"):
        return RANDOM_HINT
    if op in ("softplus",):
        return f"softplus(beta={_arg(args, kwargs, 1, 'beta', 1):g}): jax.nn.softplus has no beta"
    return ""


def op_hint(op: str, args: tuple = (), kwargs: dict | None = None) -> str:
    """What to check at a functional op of the torch forward (``op``: its source name, e.g. "interpolate"),
    from its constant arguments (tensor arguments are passed as None)."""
    text = _op_hint(op, tuple(args), dict(kwargs or {}))
    if text:
        return text
    if op in _NO_PITFALL:
        return ""
    return f"{op}: no known pitfall; compare the flax code with torch's line by line"


def dtype_hint(cmp_dtype: str, flax_dtype: str) -> str:
    """The flax side computes in another dtype than the comparison."""
    want = f"jnp.{cmp_dtype}"
    return (f"the flax value is {flax_dtype} in a {cmp_dtype} comparison: the module computes in {flax_dtype} "
            f"(nnx layers take dtype={want} for the computation and param_dtype={want} for the parameters)")
