#!/usr/bin/env python3
"""Scaling model of MultiMat pre-training (ARCHITECTURE.md, "Scaling model"): predicted step time
and efficiency for 154k materials at global batch 360 over p = 8, 64, 512 GPUs.

Inputs, each stated:
  * N_params of the paper-size model: counted by our code (`cargo test --lib step_timing --
    --nocapture` prints `train::step_timing::encoder_parameter_counts` for the defaults);
    pass it with --params.
  * forward multiply-accumulates (MACs) per sample, counted here layer by layer from the
    architectures in src/model/ (PotNet 256 hidden x 3 convs, DOS transformer 4 x 128 wide over
    601 tokens, 3-D ResNeXt-50 on 32^3, text MLP 768-512-512-128); the crystal-graph size per
    material (atoms, local and infinite edges) is measured from shards with --shard.
  * training FLOPs = 3 x forward (backward ~ 2 x forward), 2 FLOPs per MAC.
  * achieved per-GPU rate R and a per-step launch floor; NVLink/InfiniBand bandwidths and
    latencies (defaults: A100-class node of 8 GPUs, NVLink 3 bus bandwidth 200 GB/s, one HDR
    200 Gb/s NIC per GPU ~ 20 GB/s achieved, alpha 3 us intra-node / 6 us inter-node).
Collective cost (ring): all-reduce of n bytes 2(p-1)/p * n/BW + 2(p-1) alpha; all-gather of an
n-byte result (p-1)/p * n/BW + (p-1) alpha. Small latency-bound all-reduces (SyncBN, loss) are
also given with a tree, 2 log2(p) alpha, which NCCL/MPI use for small messages.

Usage: benches/scaling_model.py --params N [--shard path/to/shard.h5]
"""
import argparse
import math


def resnext3d_macs(grid=32, stages=(3, 4, 6, 3), planes=(128, 256, 512, 1024), strides=(1, 2, 2, 2),
                   cardinality=32, stem=64, embed=128):
    """Forward MACs and BatchNorm layer count of src/model/resnext3d.rs's layout."""
    def out(n, k, s, p):
        return (n + 2 * p - k) // s + 1
    g = out(grid, 7, 2, 3)                       # stem 7^3 / 2
    macs = g ** 3 * stem * 1 * 343
    bns = 1
    g = out(g, 3, 2, 1)                          # max-pool 3^3 / 2
    c = stem
    for count, pl, st in zip(stages, planes, strides):
        width = cardinality * pl // 32           # grouped width
        for b in range(count):
            s = st if b == 0 else 1
            g_out = out(g, 3, s, 1)
            macs += g ** 3 * c * width           # conv1 1^3 at input resolution
            macs += g_out ** 3 * width * (width // cardinality) * 27  # grouped 3^3, stride s
            macs += g_out ** 3 * width * 2 * pl  # conv3 1^3
            bns += 3
            if b == 0:
                macs += g_out ** 3 * c * 2 * pl  # projection shortcut
                bns += 1
            c, g = 2 * pl, g_out
    macs += c * embed                            # fc
    return macs, bns


def dos_transformer_macs(tokens=601, dim=128, layers=4, heads=8, head_size=64, ffn=512, embed=128):
    inner = heads * head_size
    per_token = 2 * dim + (2 * dim) ** 2 + 2 * dim * dim   # embeddings, mix, down
    per_layer = tokens * (3 * dim * inner + inner * dim + 2 * dim * ffn) + 2 * tokens * tokens * inner
    return tokens * per_token + layers * per_layer + dim * embed


def potnet_macs(atoms, local_edges, infinite_edges, hidden=256, convs=3, local_bins=256, inf_bins=64, embed=128):
    h = hidden
    edges = local_edges + infinite_edges
    macs = atoms * 92 * h + local_edges * local_bins * h + infinite_edges * inf_bins * h
    macs += convs * edges * 2 * (3 * h * h + h * h)        # mlp_a and mlp_b, 3H->H->H each
    bns = 1 + 2 * convs                                    # infinite_bn, per conv bn_a and bn
    return macs + h * embed, bns


def text_mlp_macs():
    return 768 * 512 + 512 * 512 + 512 * 128


def graph_size(shard):
    import h5py
    with h5py.File(shard, "r") as f:
        n = len(f["crystal/atom_offsets"]) - 1
        atoms = f["crystal/atom_offsets"][-1] / n
        local = f["graphs/local/edge_offsets"][-1] / n
        inf = f["graphs/infinite/edge_offsets"][-1] / n
    return atoms, local, inf, n


def ring_allreduce(nbytes, p, bw, alpha):
    return 0.0 if p == 1 else 2 * (p - 1) / p * nbytes / bw + 2 * (p - 1) * alpha


def ring_allgather(nbytes, p, bw, alpha):
    return 0.0 if p == 1 else (p - 1) / p * nbytes / bw + (p - 1) * alpha


def tree_allreduce_small(p, alpha):
    return 0.0 if p == 1 else 2 * math.ceil(math.log2(p)) * alpha


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=int, required=True, help="N_params of the paper-size model (from our code)")
    ap.add_argument("--shard", help="a shard to measure atoms/edges per material from")
    ap.add_argument("--atoms", type=float, default=None)
    ap.add_argument("--batch", type=int, default=360)
    ap.add_argument("--materials", type=int, default=154_000)
    ap.add_argument("--embed", type=int, default=128)
    ap.add_argument("--modalities", type=int, default=4)
    ap.add_argument("--rate", type=float, default=30e12, help="achieved FLOP/s per GPU (A100 TF32 peak 156e12)")
    ap.add_argument("--floor", type=float, default=3e-3, help="per-step launch/latency floor of compute, s")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--nvlink-bw", type=float, default=200e9)
    ap.add_argument("--ib-bw", type=float, default=20e9)
    ap.add_argument("--alpha-intra", type=float, default=3e-6)
    ap.add_argument("--alpha-inter", type=float, default=6e-6)
    a = ap.parse_args()

    if a.shard:
        atoms, local, inf, n = graph_size(a.shard)
        print(f"graph size measured on {n} materials of {a.shard}: {atoms:.1f} atoms, {local:.0f} local + {inf:.0f} infinite edges")
    else:
        atoms, local, inf = a.atoms or 10.0, 120.0, 75.0
    pot, pot_bn = potnet_macs(atoms, local, inf)
    res, res_bn = resnext3d_macs()
    dos = dos_transformer_macs()
    txt = text_mlp_macs()
    fwd = pot + res + dos + txt
    train_flop = 3 * 2 * fwd
    print(f"forward MACs/sample: PotNet {pot/1e9:.3f} G, DOS transformer {dos/1e9:.3f} G, ResNeXt-50-3D {res/1e9:.3f} G, "
          f"text MLP {txt/1e6:.2f} M; total {fwd/1e9:.3f} GMAC -> training {train_flop/1e9:.2f} GFLOP/sample")
    syncbn = 2 * (pot_bn + res_bn)  # one f64 all-reduce per BN forward and one per backward
    print(f"SyncBN layers: PotNet {pot_bn}, ResNeXt {res_bn} -> {syncbn} small all-reduces/step (+1 loss)")
    grad_bytes = 4 * a.params
    gather_bytes = a.modalities * a.batch * a.embed * 4
    print(f"per step: gradient all-reduce {grad_bytes/1e6:.1f} MB; embedding all-gather {gather_bytes/1e3:.0f} kB result "
          f"(+ the same again as the all-reduce of d(embeddings)); {math.ceil(a.materials / a.batch)} steps/epoch")
    print()
    hdr = ("GPUs", "samples/GPU", "compute ms", "grad AR ms", "gather+dE ms", "SyncBN ring ms", "SyncBN tree ms",
           "step ms", "efficiency", "step ms, AR overlapped", "efficiency, overlapped", "epoch s")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    t1 = None
    for p in (1, 8, 64, 512):
        per_gpu = math.ceil(a.batch / p)
        compute = max(per_gpu * train_flop / a.rate, 0.0) + a.floor
        intra = p <= a.gpus_per_node
        bw = a.nvlink_bw if intra else a.ib_bw
        alpha = a.alpha_intra if intra else a.alpha_inter
        grad = ring_allreduce(grad_bytes, p, bw, alpha)
        emb = ring_allgather(gather_bytes, p, bw, alpha) * 1 + ring_allreduce(gather_bytes, p, bw, alpha)
        bn_ring = (syncbn + 1) * ring_allreduce(16 * 1024, p, bw, alpha)  # ~1k channels x (sum, sumsq) f64
        bn_tree = (syncbn + 1) * (tree_allreduce_small(p, alpha) + (16 * 1024 / bw if p > 1 else 0))
        step = compute + grad + emb + bn_tree  # nothing overlapped (the current code)
        # Bucketed all-reduce overlapped with the backward (2/3 of the compute) hides that much.
        overlapped = compute + max(0.0, grad - 2 / 3 * (compute - a.floor)) + emb + bn_tree
        if t1 is None:
            t1 = step
        eff = t1 / (p * step)
        eff_o = t1 / (p * overlapped)
        epoch = math.ceil(a.materials / a.batch) * step
        print(f"| {p} | {per_gpu} | {compute*1e3:.1f} | {grad*1e3:.2f} | {emb*1e3:.3f} | {bn_ring*1e3:.1f} | {bn_tree*1e3:.2f} | "
              f"{step*1e3:.1f} | {eff*100:.0f}% | {overlapped*1e3:.1f} | {eff_o*100:.0f}% | {epoch:.1f} |")


if __name__ == "__main__":
    main()
