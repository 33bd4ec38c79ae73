"""Probe: which op's float64 backward differs between torch.compile (static) and eager on a device."""
import json, sys
import torch
import torch.nn.functional as F

dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
g = torch.Generator().manual_seed(0)
def r(*s, dt=torch.float64):
    return torch.randn(*s, generator=g, dtype=dt).to(dev)

def pool(x, w): return (F.max_pool2d(x, 3, 2) * w).sum()
def pool22(x, w): return (F.max_pool2d(x, 2, 2) * w).sum()
def relupool(x, w): return (F.max_pool2d(F.relu(x), 3, 2) * w).sum()
def convin(x, w): return (F.conv2d(x, w[0], stride=2) * w[1]).sum()
cases = {
    "pool3s2": (pool, lambda dt: (r(8, 4, 14, 14, dt=dt), r(8, 4, 6, 6, dt=dt))),
    "pool2s2": (pool22, lambda dt: (r(8, 4, 14, 14, dt=dt), r(8, 4, 7, 7, dt=dt))),
    "relupool3s2": (relupool, lambda dt: (r(8, 4, 14, 14, dt=dt), r(8, 4, 6, 6, dt=dt))),
}
out = {}
for dt in (torch.float64, torch.float32):
    for name, (fn, make) in cases.items():
        for dyn in (False, True):
            x, w = make(dt)
            xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
            fn(xs[0], w).backward()
            torch._dynamo.reset()
            torch.compile(fn, dynamic=dyn)(xs[1], w).backward()
            e = float((xs[1].grad - xs[0].grad).norm() / xs[0].grad.norm())
            out[f"{name} {str(dt)[6:]} dynamic={dyn}"] = e
# conv input grad
for dt in (torch.float64,):
    x, wt, w2 = r(8, 4, 6, 6, dt=dt), r(4, 4, 3, 3, dt=dt), r(8, 4, 2, 2, dt=dt)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    f = lambda x: (F.conv2d(x, wt, stride=2) * w2).sum()
    f(xs[0]).backward(); torch._dynamo.reset(); torch.compile(f, dynamic=False)(xs[1]).backward()
    out["convin float64 static"] = float((xs[1].grad - xs[0].grad).norm() / xs[0].grad.norm())
print(json.dumps(out, indent=0))
