"""Probe: tinycnn as one function, torch.compile (static) vs eager float64 grads of conv0, with pieces removed."""
import json, sys
import torch
import torch.nn.functional as F

dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
if "nocudnn" in sys.argv:
    torch.backends.cudnn.enabled = False
g = torch.Generator().manual_seed(0)
def r(*s, dt=torch.float64):
    return (torch.randn(*s, generator=g, dtype=dt) * 0.3).to(dev)
x, y = r(8, 1, 28, 28), torch.randint(0, 10, (8,), generator=g).to(dev)
k0, b0, k3, b3, wd, bd, wd1, wd2 = r(4, 1, 3, 3), r(4), r(4, 4, 3, 3), r(4), r(10, 16), r(10), r(10, 64), r(10, 36)
def net(x, y, k0, b0, k3, b3, wd, bd, relu0=True, pool=True, relu3=True, ce=True, s3=2, unfold=False, psize=3):
    h = F.conv2d(x, k0, b0, stride=2, padding=1)
    h = F.relu(h) if relu0 else h
    h = F.max_pool2d(h, psize, 2) if pool else h[:, :, :6, :6]
    if unfold:
        h = (k3.reshape(4, 36) @ F.unfold(h, 3, stride=2) + b3[:, None]).reshape(-1, 4, 2, 2)
    else:
        h = F.conv2d(h, k3, b3, stride=s3)
    h = F.relu(h) if relu3 else h
    z = F.linear(h.flatten(1), wd, bd)
    return F.cross_entropy(z, y) if ce else (z * z).sum()
variants = {"full": {}, "no relu0": {"relu0": False}, "no pool": {"pool": False}, "no relu3": {"relu3": False},
            "sum loss": {"ce": False}, "conv3 as unfold": {"unfold": True}, "conv3 stride 1": {"s3": 1}, "pool 2x2": {"psize": 2}, "no relu0 no pool": {"relu0": False, "pool": False}}
out = {}
for name, kw in variants.items():
    ps = [[t.clone().requires_grad_() for t in (k0, b0, k3, b3, wd, bd)] for _ in range(2)]
    f = lambda x, y, *p: net(x, y, *p, **kw)
    if kw.get('psize') == 2:
        ps = [[t.clone().requires_grad_() for t in (k0, b0, k3, b3, wd2, bd)] for _ in range(2)]
    if kw.get('s3') == 1:
        ps = [[t.clone().requires_grad_() for t in (k0, b0, k3, b3, wd1, bd)] for _ in range(2)]
    f(x, y, *ps[0]).backward()
    torch._dynamo.reset()
    torch.compile(f, dynamic=False)(x, y, *ps[1]).backward()
    out[name] = [float((a.grad - e.grad).norm() / e.grad.norm()) for a, e in zip(ps[1], ps[0])]
print(json.dumps(out))
