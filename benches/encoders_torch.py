"""PyTorch side of benches/encoders_vs_torch.sh: the MultiMat encoders written in plain PyTorch
from the paper's Methods (and the hyper-parameters multimat records in `<workload>.meta.json`),
timed on the exact batch `multimat bench encoders --dump-dir` wrote: one pre-training step =
forward + backward of mean(y) (of the AllPairsCLIP loss for the full model) + AdamW.

Prints one JSON object: median step time and its parts, CPU seconds per step (all threads),
materials/s by wall and by CPU time, peak RSS, and the model FLOPs of one step counted by
torch's FlopCounterMode (attention counted through explicit matmuls).

Usage: encoders_torch.py DUMP_DIR WORKLOAD [--repeats N] [--threads N] [--potnet-factorised]
       encoders_torch.py --sgemm [--threads N]        (torch.mm 2048² peak)

The PotNet convolution is written the way the reference code (PyG message passing) computes it:
Linear(3H→H) on the per-edge concatenation [h_i, h_j, e_ij]. --potnet-factorised computes the
same function as multimat does (W·z = W_i·h[i] + W_j·h[j] + W_e·e, the node products over atoms),
so the ratio can be read both against the reference formulation and like for like.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# Where the peer runs: "cpu" or "cuda" (--device). Factories follow torch.set_default_device;
# arrays read from the dump are moved there explicitly.
DEVICE = "cpu"


def load(dump, prefix, name):
    return torch.from_numpy(np.load(os.path.join(dump, f"{prefix}.{name}.npy"))).to(DEVICE)


def sync():
    """Wait for queued GPU work, so wall-clock phases measure the work and not the queueing."""
    if DEVICE != "cpu":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- radial basis functions
class RbfGrid:
    """K centres evenly over [vmin, vmax]; length scale = the spacing (CGCNN's and PotNet's)."""

    def __init__(self, vmin, vmax, bins):
        self.centres = torch.linspace(vmin, vmax, bins)
        self.scale = (vmax - vmin) / (bins - 1)

    def gaussian(self, x):
        return torch.exp(-(((x[:, None] - self.centres) / self.scale) ** 2))

    def multiquadric(self, x):
        return torch.sqrt(1.0 + ((x[:, None] - self.centres) / self.scale) ** 2)


def segment_mean(h, graph_index, counts):
    """Mean of the rows of each graph: (N, C) → (B, C)."""
    out = torch.zeros(counts.shape[0], h.shape[1], dtype=h.dtype).index_add_(0, graph_index, h)
    return out / counts[:, None]


# ---------------------------------------------------------------- crystal graphs
class Graph:
    def __init__(self, dump, prefix):
        self.x = load(dump, prefix, "atom_features")
        offsets = load(dump, prefix, "node_offsets")
        self.counts = (offsets[1:] - offsets[:-1]).to(torch.float32)
        self.graph_index = torch.repeat_interleave(torch.arange(len(offsets) - 1), offsets[1:] - offsets[:-1])
        for name in ("local", "cgcnn"):
            for part in ("src", "dst", "distance"):
                setattr(self, f"{name}_{part}", load(dump, prefix, f"{name}_{part}"))
        for part in ("src", "dst", "coulomb", "london", "pauli"):
            setattr(self, f"infinite_{part}", load(dump, prefix, f"infinite_{part}"))
        self.batch = len(offsets) - 1


class PotNetConv(nn.Module):
    """m_ij = σ(BN(MLP_a[h_i, h_j, e_ij])) ⊙ MLP_b[h_i, h_j, e_ij]; h_i ← ReLU(h_i + BN(Σ_j m_ij))."""

    def __init__(self, h, factorised):
        super().__init__()
        self.mlp_a = nn.Sequential(nn.Linear(3 * h, h), nn.SiLU(), nn.Linear(h, h))
        self.bn_a = nn.BatchNorm1d(h)
        self.mlp_b = nn.Sequential(nn.Linear(3 * h, h), nn.SiLU(), nn.Linear(h, h))
        self.bn = nn.BatchNorm1d(h)
        self.h = h
        self.factorised = factorised

    def first(self, lin, hn, e, src, dst):
        if not self.factorised:
            return lin(torch.cat([hn[dst], hn[src], e], dim=1))
        w, h = lin.weight, self.h
        node = hn @ torch.cat([w[:, :h], w[:, h:2 * h]], dim=0).t()  # (N, 2H): [W_i·h, W_j·h]
        return node[dst, :h] + node[src, h:] + e @ w[:, 2 * h:].t() + lin.bias

    def forward(self, hn, e, src, dst):
        a = self.mlp_a[2](self.mlp_a[1](self.first(self.mlp_a[0], hn, e, src, dst)))
        b = self.mlp_b[2](self.mlp_b[1](self.first(self.mlp_b[0], hn, e, src, dst)))
        m = torch.sigmoid(self.bn_a(a)) * b
        agg = torch.zeros_like(hn).index_add_(0, dst, m)
        return F.relu(hn + self.bn(agg))


class PotNet(nn.Module):
    def __init__(self, cfg, atom_dim, embed_dim, factorised=False):
        super().__init__()
        h = cfg["hidden"]
        self.cfg = cfg
        self.atom_embedding = nn.Linear(atom_dim, h)
        self.local_embedding = nn.Linear(cfg["local_rbf_bins"], h)
        self.infinite_embedding = nn.Linear(cfg["infinite_rbf_bins"], h)
        self.infinite_bn = nn.BatchNorm1d(h)
        self.convs = nn.ModuleList(PotNetConv(h, factorised) for _ in range(cfg["conv_layers"]))
        self.head = nn.Linear(h, embed_dim)
        self.local_grid = RbfGrid(cfg["rbf_min"], cfg["rbf_max"], cfg["local_rbf_bins"])
        self.infinite_grid = RbfGrid(cfg["rbf_min"], cfg["rbf_max"], cfg["infinite_rbf_bins"])

    def forward(self, g):
        hn = self.atom_embedding(g.x)
        e_local = F.silu(self.local_embedding(self.local_grid.gaussian(self.cfg["local_scale"] / g.local_distance)))
        wc, wl, wp = self.cfg["potential_weights"]
        s = wc * g.infinite_coulomb + wl * g.infinite_london + wp * g.infinite_pauli
        e_inf = self.infinite_bn(F.softplus(self.infinite_embedding(self.infinite_grid.multiquadric(s))))
        e = torch.cat([e_local, e_inf], dim=0)
        src = torch.cat([g.local_src, g.infinite_src])
        dst = torch.cat([g.local_dst, g.infinite_dst])
        for conv in self.convs:
            hn = conv(hn, e, src, dst)
        return self.head(segment_mean(hn, g.graph_index, g.counts))


class CgcnnConv(nn.Module):
    def __init__(self, f, edge_features):
        super().__init__()
        self.fc_full = nn.Linear(2 * f + edge_features, 2 * f)
        self.bn1 = nn.BatchNorm1d(2 * f)
        self.bn2 = nn.BatchNorm1d(f)

    def forward(self, hn, g_edges, src, dst):
        gated = self.bn1(self.fc_full(torch.cat([hn[dst], hn[src], g_edges], dim=1)))
        filt, core = gated.chunk(2, dim=1)
        agg = torch.zeros_like(hn).index_add_(0, dst, torch.sigmoid(filt) * F.softplus(core))
        return F.softplus(hn + self.bn2(agg))


class Cgcnn(nn.Module):
    def __init__(self, cfg, atom_dim, embed_dim):
        super().__init__()
        f = cfg["atom_fea_len"]
        self.grid = RbfGrid(cfg["rbf_min"], cfg["rbf_max"], cfg["rbf_bins"])
        self.embedding = nn.Linear(atom_dim, f)
        self.convs = nn.ModuleList(CgcnnConv(f, cfg["rbf_bins"]) for _ in range(cfg["conv_layers"]))
        self.conv_to_fc = nn.Linear(f, cfg["h_fea_len"])
        self.head = nn.Linear(cfg["h_fea_len"], embed_dim)

    def forward(self, g):
        hn = self.embedding(g.x)
        ge = self.grid.gaussian(g.cgcnn_distance)
        for conv in self.convs:
            hn = conv(hn, ge, g.cgcnn_src, g.cgcnn_dst)
        pooled = F.softplus(segment_mean(hn, g.graph_index, g.counts))
        return self.head(F.softplus(self.conv_to_fc(pooled)))


# ---------------------------------------------------------------- DOS Transformer
EXPLICIT_ATTENTION = False  # True while counting FLOPs: SDPA's CPU kernel is not counted


class Attention(nn.Module):
    """Packed qkv C → 3·H·hs (head size free of C), SDPA per head, projection H·hs → C."""

    def __init__(self, dim, heads, head_size, qkv_bias):
        super().__init__()
        self.heads, self.head_size = heads, head_size
        self.qkv = nn.Linear(dim, 3 * heads * head_size, bias=qkv_bias)
        self.proj = nn.Linear(heads * head_size, dim)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_size).permute(2, 0, 3, 1, 4)  # (B, H, T, hs) each
        if EXPLICIT_ATTENTION:
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_size), dim=-1) @ v
        else:
            att = F.scaled_dot_product_attention(q, k, v)
        return self.proj(att.transpose(1, 2).reshape(b, t, self.heads * self.head_size))


class Block(nn.Module):
    """Pre-LN: h = x + Attn(LN₁(x)); y = h + FFN(LN₂(h)), FFN with exact GELU."""

    def __init__(self, c):
        super().__init__()
        self.ln1 = nn.LayerNorm(c["dim"], eps=c["ln_eps"])
        self.attn = Attention(c["dim"], c["heads"], c["head_size"], c["qkv_bias"])
        self.ln2 = nn.LayerNorm(c["dim"], eps=c["ln_eps"])
        self.fc1 = nn.Linear(c["dim"], c["ffn_dim"])
        self.fc2 = nn.Linear(c["ffn_dim"], c["dim"])

    def forward(self, x):
        h = x + self.attn(self.ln1(x))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class DosTransformer(nn.Module):
    """Energy and density embeddings (no positional encoding), mixing and down-projection,
    pre-LN blocks, mean pool over the (all valid) points, head (if configured; without one the
    pooled tokens are the embedding, as in the reference)."""

    def __init__(self, c, embed_dim):
        super().__init__()
        d = c["dim"]
        self.energy_embedding = nn.Linear(1, d)
        self.density_embedding = nn.Linear(1, d)
        self.mix = nn.Linear(2 * d, 2 * d) if c["mix_layer"] else nn.Identity()
        self.down = nn.Linear(2 * d, d)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.head = nn.Linear(d, embed_dim) if c.get("head", True) else nn.Identity()

    def forward(self, batch):
        energies, densities = batch
        x = torch.cat([self.energy_embedding(energies[..., None]), self.density_embedding(densities[..., None])], dim=-1)
        x = self.down(self.mix(x))
        for blk in self.blocks:
            x = blk(x)
        return self.head(x.mean(dim=1))


# ---------------------------------------------------------------- 3-D ResNeXt
class Bottleneck(nn.Module):
    def __init__(self, cin, planes, cardinality, stride):
        super().__init__()
        mid, out = cardinality * planes // 32, 2 * planes
        self.conv1 = nn.Conv3d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv3d(cin, out, 1, stride=stride, bias=False), nn.BatchNorm3d(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNeXt3d(nn.Module):
    def __init__(self, c, embed_dim):
        super().__init__()
        k = c["stem_kernel"]
        self.conv1 = nn.Conv3d(1, c["stem_channels"], k, stride=c["stem_stride"], padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm3d(c["stem_channels"])
        self.pool = nn.MaxPool3d(3, stride=2, padding=1)
        blocks, cin = [], c["stem_channels"]
        for count, planes, stride in zip(c["stages"], c["planes"], c["strides"]):
            for i in range(count):
                blocks.append(Bottleneck(cin, planes, c["cardinality"], stride if i == 0 else 1))
                cin = 2 * planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, embed_dim)
        self.transform = c["input_transform"]
        self.signed_log = self.transform == "signed_log1p"

    def forward(self, batch):
        values, volumes = batch
        # raw: the stored ρ·V_cell as is (the reference); otherwise ρ = value / V_cell in e/Å³.
        rho = values if self.transform == "raw" else values / volumes[:, None, None, None]
        if self.signed_log:
            rho = torch.sign(rho) * torch.log1p(rho.abs())
        h = self.pool(F.relu(self.bn1(self.conv1(rho[:, None]))))
        h = self.blocks(h)
        return self.fc(h.mean(dim=(2, 3, 4)))


class TextMlp(nn.Module):
    def __init__(self, c, embed_dim):
        super().__init__()
        dims = [c["input_dim"], *c["hidden"], embed_dim]
        layers = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        return self.mlp(x)


# ---------------------------------------------------------------- model + batch per workload
def build(meta, dump, modality, prefix, factorised):
    enc, e = meta["encoders"], meta["embed_dim"]
    if modality == "crystal" and meta["workload"] == "cgcnn":
        return Cgcnn(enc["cgcnn"], meta["atom_feature_dim"], e), Graph(dump, prefix)
    if modality == "crystal":
        return PotNet(enc["potnet"], meta["atom_feature_dim"], e, factorised), Graph(dump, prefix)
    if modality == "dos":
        return DosTransformer(enc["dos_transformer"], e), (load(dump, prefix, "energies"), load(dump, prefix, "densities"))
    if modality == "charge_density":
        cfg = enc["resnext3d"] if meta["workload"] == "resnext50" else meta["resnext_small"]
        return ResNeXt3d(cfg, e), (load(dump, prefix, "values"), load(dump, prefix, "volumes"))
    if modality == "text":
        return TextMlp(enc["text_mlp"], e), load(dump, prefix, "values")
    raise SystemExit(f"unknown modality {modality!r}")


class Full(nn.Module):
    """Every encoder → L2 normalisation → AllPairsCLIP (mean of symmetric InfoNCE over all pairs)."""

    def __init__(self, encoders, temperature):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.temperature = temperature

    def forward(self, batches):
        zs = [F.normalize(enc(b), dim=1) for enc, b in zip(self.encoders, batches)]
        labels = torch.arange(zs[0].shape[0])
        terms = []
        for i in range(len(zs)):
            for j in range(i + 1, len(zs)):
                logits = zs[i] @ zs[j].t() / self.temperature
                terms.append(0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)))
        return torch.stack(terms).mean()


def decay_groups(model):
    """AdamW groups: weight decay on Linear/Conv weights, none on biases and norm parameters."""
    decay, no_decay = [], []
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            is_weight = name == "weight" and isinstance(mod, (nn.Linear, nn.Conv3d))
            (decay if is_weight else no_decay).append(p)
    return decay, no_decay


def time_workload(dump, workload, repeats, factorised):
    with open(os.path.join(dump, f"{workload}.meta.json")) as f:
        meta = json.load(f)
    torch.manual_seed(0)
    if workload == "full":
        parts = [build(meta, dump, m, p, factorised) for m, p in meta["batches"].items()]
        model = Full([p[0] for p in parts], meta["loss"]["temperature"])
        batch = [p[1] for p in parts]
        objective = lambda: model(batch)  # noqa: E731
    else:
        (modality, prefix), = meta["batches"].items()
        model, batch = build(meta, dump, modality, prefix, factorised)
        objective = lambda: model(batch).mean()  # noqa: E731
    model.train()
    decay, no_decay = decay_groups(model)
    a = meta["adamw"]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a["lr"], betas=tuple(a["betas"]), eps=a["eps"])

    def step():
        sync()
        t0 = time.perf_counter()
        loss = objective()
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t3 = time.perf_counter()
        if not torch.isfinite(loss):
            raise SystemExit(f"{workload}: non-finite loss {loss.item()}")
        return t1 - t0, t2 - t1, t3 - t2

    step()  # warm-up
    cpu0 = time.process_time()
    phases = [step() for _ in range(max(repeats, 1))]
    cpu_step = (time.process_time() - cpu0) / len(phases)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_gpu_mib = torch.cuda.max_memory_allocated() / 2**20 if DEVICE != "cpu" else None

    # Model FLOPs of one step's forward + backward (the optimiser's elementwise work is not counted).
    global EXPLICIT_ATTENTION
    EXPLICIT_ATTENTION = True
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        objective().backward()
    opt.zero_grad(set_to_none=True)
    EXPLICIT_ATTENTION = False

    threads = torch.get_num_threads()
    totals = [sum(p) for p in phases]
    step_s = statistics.median(totals)
    b = meta["batch"]
    return {
        "name": workload + ("_factorised" if factorised and workload in ("potnet", "full") else ""),
        "batch": b, "params": sum(p.numel() for p in model.parameters()), "steps": len(phases), "threads": threads,
        "step_s": step_s,
        "forward_s": statistics.median(p[0] for p in phases),
        "backward_s": statistics.median(p[1] for p in phases),
        "optimizer_s": statistics.median(p[2] for p in phases),
        "cpu_step_s": cpu_step,
        "materials_per_s": b / step_s,
        "materials_per_cpu_s": b / (cpu_step / threads) if cpu_step > 0 else None,
        "peak_rss_mib": peak_mib,
        "peak_gpu_mib": peak_gpu_mib,
        "device": DEVICE,
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if DEVICE != "cpu" else None,
        "model_flops": counter.get_total_flops(),
        "torch": torch.__version__,
    }


def sgemm_peak(n=2048, repeats=5):
    if DEVICE != "cpu":
        n = max(n, 8192)  # a GPU needs a larger problem to reach its GEMM peak
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    sync()
    walls, cpu0 = [], time.process_time()
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        sync()
        walls.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu0) / repeats
    flops = 2.0 * n ** 3
    return {"n": n, "threads": torch.get_num_threads(), "gflops_wall": flops / min(walls) / 1e9,
            "gflops_cpu_per_thread_x_threads": flops / cpu * torch.get_num_threads() / 1e9}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump", nargs="?")
    ap.add_argument("workload", nargs="?")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--potnet-factorised", action="store_true")
    ap.add_argument("--sgemm", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--tf32", action="store_true", help="TF32 tensor-core GEMMs on a GPU (PyTorch's default is off)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE != "cpu":
        torch.set_default_device(DEVICE)
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.sgemm:
        print(json.dumps(sgemm_peak()))
        return
    if not args.dump or not args.workload:
        ap.error("DUMP_DIR and WORKLOAD are required unless --sgemm")
    print(json.dumps(time_workload(args.dump, args.workload, args.repeats, args.potnet_factorised)))


if __name__ == "__main__":
    sys.exit(main())
