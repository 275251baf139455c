"""The port certificates of the models torch.fx cannot trace (or that draw with torch factories), on 4
real MNIST test digits: float64 max relative difference over every row, float32 JAX error over torch's
(the worst row), eval and train mode. The table in docs/porting.md comes from this script.

    python docs/measure/export_ports.py [DATA_DIR]
"""

import sys

import numpy as np
import torch

sys.path.insert(0, "parity_tests")
from test_port_export import FactoryVAE, FlexibleConvAE, OptionalMask, RowRNN  # noqa: E402

from ae_core import mnist  # noqa: E402
from ae_parity.port import certificate, port  # noqa: E402

root = sys.argv[1] if len(sys.argv) > 1 else "data"
digits = mnist.load("test", "sample", root).images[:4].astype(np.float64) / 255.0
for cls, shape in ((FlexibleConvAE, (784,)), (FlexibleConvAE, (1, 28, 28)), (RowRNN, (28, 28)), (FactoryVAE, (784,)),
                   (OptionalMask, (784,))):
    torch.manual_seed(0)
    model = cls().double()
    x = digits.reshape(4, *shape)
    rows, _ = certificate(model, x, make_flax=lambda dt, m=model, x=x: port(m, torch.from_numpy(x[:2]), dtype=dt))
    f64 = max(e.max_rel for dt, _, r in rows if dt == "float64" for e in r.entries if e.max_rel is not None)
    ratio = max(e.jax_err / e.torch_err for dt, _, r in rows if dt == "float32" for e in r.entries
                if e.kind == "ref" and e.torch_err)
    ok = all(r.ok for _, _, r in rows)
    print(f"{cls.__name__:<15} input {str(shape):<12} float64 {f64:.1e}  float32 ratio {ratio:.2f}  "
          f"{'agrees' if ok else 'DIVERGES'}")
