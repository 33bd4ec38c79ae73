"""Probe: first-step gradients of torch.compile'd loss vs eager, per variant, on cuda."""
import json, sys
import numpy as np, torch
import torch.nn.functional as F
from fwbench import backends
from fwbench.backends.torch_backend import _host, from_native
from fwbench.harness.conformance.cases import params_of, spec_of
from fwbench.harness.conformance.context import cast
from fwbench.harness.conformance.training import CASE, batches

variant, dtype = sys.argv[1], sys.argv[2]
dev = sys.argv[3] if len(sys.argv) > 3 else "cuda"
spec, start = spec_of(CASE), cast(params_of(CASE), dtype)
b = backends.build("torch", spec, start, device=dev, dtype=dtype)
(xn, yn), (xn2, yn2) = batches(2, 8)
_, ref = b.loss_and_grads(xn, yn)
model = b.model
def loss(x, y):
    return F.cross_entropy(model(x), y)
kw = {"mode": "reduce-overhead"} if variant.startswith("ro") else {}
if variant == "ro-nocg":
    import torch._inductor.config as ic; ic.triton.cudagraph_trees = False
f = torch.compile(loss, dynamic=None if variant == "dyn" else False, **kw)
x, y = b.prepare_batch(xn, yn)
out = {"variant": variant, "dtype": dtype, "x_stride": list(x.stride()), "x_contig": x.is_contiguous()}
if variant == "dyn":
    torch._dynamo.mark_dynamic(x, 0); torch._dynamo.mark_dynamic(y, 0)
if variant == "ro-clone":
    x = x.clone()
b._train(True)
for call in range(3):
    torch.compiler.cudagraph_mark_step_begin()
    model.zero_grad(set_to_none=True)
    l = f(x, y); l.backward()
    got = from_native({k: _host(p.grad) for k, p in b.named.items()})
    out[f"call{call}"] = {k: float(np.linalg.norm(got[k] - ref[k]) / np.linalg.norm(ref[k])) for k in ref}
print(json.dumps(out))
