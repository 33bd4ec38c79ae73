"""Probe: conv0's weight/bias grads under torch.compile (static) vs eager, piece by piece, float64."""
import json, sys
import torch
import torch.nn.functional as F

dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
g = torch.Generator().manual_seed(0)
def r(*s, dt):
    return torch.randn(*s, generator=g, dtype=dt).to(dev)
def conv(x, k, b): return F.conv2d(x, k, b, stride=2, padding=1)
fns = {
    "conv-relu-pool": lambda x, k, b, w, w2: (F.max_pool2d(F.relu(conv(x, k, b)), 3, 2) * w).sum(),
    "conv-pool": lambda x, k, b, w, w2: (F.max_pool2d(conv(x, k, b), 3, 2) * w).sum(),
    "conv-relu": lambda x, k, b, w, w2: (F.relu(conv(x, k, b)) * w2).sum(),
    "conv": lambda x, k, b, w, w2: (conv(x, k, b) * w2).sum(),
    "conv-nobias-relu-pool": lambda x, k, b, w, w2: (F.max_pool2d(F.relu(conv(x, k, None)), 3, 2) * w).sum(),
}
out = {}
for dt in (torch.float64, torch.float32):
    x, k, b, w, w2 = r(8, 1, 28, 28, dt=dt), r(4, 1, 3, 3, dt=dt), r(4, dt=dt), r(8, 4, 6, 6, dt=dt), r(8, 4, 14, 14, dt=dt)
    for name, fn in fns.items():
        ks = [k.clone().requires_grad_() for _ in range(2)]
        bs = [b.clone().requires_grad_() for _ in range(2)]
        fn(x, ks[0], bs[0], w, w2).backward()
        torch._dynamo.reset()
        torch.compile(fn, dynamic=False)(x, ks[1], bs[1], w, w2).backward()
        rel = lambda a, e: float((a.grad - e.grad).norm() / e.grad.norm()) if e.grad is not None and e.grad.norm() > 0 else None
        out[f"{name} {str(dt)[6:]}"] = [rel(ks[1], ks[0]), rel(bs[1], bs[0])]
print(json.dumps(out, indent=0))
