#!/usr/bin/env python3
"""multimat-screen vs faiss-cpu IndexFlatIP (exact inner product) on the same random data.

Run through benches/screen_vs_faiss.sh, which makes the virtualenv (.cache/bench-venv with
faiss-cpu, numpy, h5py from PyPI) and the release binary. For each size QxN (d = 128, k = 10,
random normalised Gaussian rows with 1 % exact duplicates) it prints:
  - seconds for the search itself (multimat: its own "screened ... in X s" line, candidates
    streamed from the HDF5 file; faiss: index.search on data already in memory) and end to end
    (whole process: reading both files, screening, and for multimat writing the CSV);
  - queries/s and effective GFLOP/s = 2*Q*N*D / t;
  - the fraction of this machine's sgemm peak, measured in the same run (numpy/OpenBLAS
    4096^3 float32 matmul with the same thread count);
  - peak resident memory of each process (/usr/bin/time -v);
  - the ratio multimat/faiss of throughputs (>1: multimat faster);
  - agreement of the two result lists (faiss breaks ties arbitrarily, multimat by id).
Numbers on a shared machine move by +-20 %; nothing here is asserted.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path


# multimat-screen's summary line on stderr, e.g. "screened 16000 queries × 62000 candidates
# (k = 10) in 3.456 s (rank 0: 6.80 CPU s; 4630 queries/s; 3.71 s total ...)".
SCREEN_LINE = re.compile(r"screened (\d+) queries × (\d+) candidates \(k = (\d+)\) in ([0-9.]+) s \(rank 0: ([0-9.]+) CPU s")


def parse_screen_stderr(stderr, nq, nc):
    """(search seconds, CPU seconds) from multimat-screen's stderr; stops with the text when the
    line is missing or describes another size (the script would otherwise report nonsense)."""
    m = SCREEN_LINE.search(stderr)
    if not m:
        sys.exit(f"multimat-screen printed no 'screened ... in X s (rank 0: Y CPU s' line; its stderr was:\n{stderr}")
    if (int(m.group(1)), int(m.group(2))) != (nq, nc):
        sys.exit(f"multimat-screen screened {m.group(1)} x {m.group(2)}, expected {nq} x {nc}:\n{stderr}")
    return float(m.group(4)), float(m.group(5))


def per(amount, seconds):
    """amount / seconds, NaN when a run was too short for the printed clock (tiny smoke sizes)."""
    return amount / seconds if seconds > 0 else float("nan")


def peak_gflops(threads, n=4096):
    """numpy (OpenBLAS) float32 GEMM throughput: best of 3 at n^3."""
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def faiss_run(args):
    """Child process: load, index, search; print JSON; save top-k ids for the comparison."""
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import faiss
    import h5py
    import numpy as np

    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    with h5py.File(args.queries) as f:
        q = f["embeddings"][:]
        qids = f["ids"].asstr()[:]
    with h5py.File(args.candidates) as f:
        c = f["embeddings"][:]
        cids = f["ids"].asstr()[:]
    # Files are written normalised (gen-random --normalise); normalise again like multimat does.
    faiss.normalize_L2(q)
    faiss.normalize_L2(c)
    index = faiss.IndexFlatIP(c.shape[1])
    index.add(c)
    import resource

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    t1, c1 = time.perf_counter(), cpu()
    sims, idx = index.search(q, args.k)
    t2, c2 = time.perf_counter(), cpu()
    np.save(args.save, idx)
    np.save(str(args.save).replace(".npy", "_sims.npy"), sims)
    print(json.dumps({"load_s": t1 - t0, "search_s": t2 - t1, "search_cpu_s": c2 - c1}))


def rss_mb(stderr):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return int(m.group(1)) / 1024 if m else float("nan")


def timed(cmd, env=None):
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p, wall


def compare(csv_path, faiss_idx_path, cand_path, k):
    """Fraction of queries whose top-k id lists agree exactly, and as sets; the largest
    rank-by-rank similarity difference (small: lists differ only by ties or near-ties)."""
    import h5py
    import numpy as np

    idx = np.load(faiss_idx_path)
    fsims = np.load(str(faiss_idx_path).replace(".npy", "_sims.npy"))
    with h5py.File(cand_path) as f:
        cids = f["ids"].asstr()[:]
    ours = {}
    with open(csv_path) as f:
        next(f)
        for line in f:
            q, r, c, s = line.rstrip("\n").rsplit(",", 3)
            ours.setdefault(q, []).append((c, float(s)))
    sims = np.array([[s for _, s in l] for l in ours.values()])
    lists = [[c for c, _ in l] for l in ours.values()]
    max_diff = float(np.abs(sims - fsims).max())
    exact = sum(1 for i, l in enumerate(lists) if l == [cids[j] for j in idx[i]])
    as_set = sum(1 for i, l in enumerate(lists) if set(l) == {cids[j] for j in idx[i]})
    return exact / len(lists), as_set / len(lists), max_diff


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faiss-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--queries")
    ap.add_argument("--candidates")
    ap.add_argument("--save")
    ap.add_argument("--sizes", default="16000x62000,16000x500000,1000x2200000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--bin", default="target/release/multimat-screen")
    ap.add_argument("--data", default=".cache/bench-data")
    ap.add_argument("--extra", default="", help="extra multimat-screen options, e.g. '--block-queries 512'")
    ap.add_argument("--peak-n", type=int, default=4096, help="matrix size of the numpy sgemm peak measurement")
    args = ap.parse_args()
    if args.faiss_child:
        return faiss_run(args)

    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; threads = {args.threads}; k = {args.k}; d = {args.dim}")
    peak = peak_gflops(args.threads, args.peak_n)
    print(f"sgemm peak (numpy/OpenBLAS {args.peak_n}^3 float32, {args.threads} threads): {peak:.1f} GFLOP/s; "
          f"load average {os.getloadavg()}", flush=True)
    import importlib.util
    have_faiss = importlib.util.find_spec("faiss") is not None
    if not have_faiss:
        print("faiss is not installed in this Python (pip install faiss-cpu): the faiss runs are skipped, "
              "multimat's are measured and parsed", flush=True)
    rows = []
    for size in args.sizes.split(","):
        nq, nc = (int(x) for x in size.lower().split("x"))
        qf = data / f"q{nq}_d{args.dim}.h5"
        cf = data / f"c{nc}_d{args.dim}.h5"
        for path, n, seed, prefix in ((qf, nq, 1, "q-"), (cf, nc, 2, "mat-")):
            if not path.exists():
                subprocess.run([args.bin, "gen-random", "--out", str(path), "-n", str(n), "--dim", str(args.dim),
                                "--seed", str(seed), "--id-prefix", prefix, "--duplicates", "0.01", "--normalise"],
                               check=True)
        out = data / f"hits_{nq}x{nc}.csv"
        cmd = [args.bin, "--queries", str(qf), "--candidates", str(cf), "-k", str(args.k), "--out", str(out),
               "--threads", str(args.threads), "-q"] + args.extra.split()
        p, mm_wall = timed(cmd)
        mm_search, mm_cpu = parse_screen_stderr(p.stderr, nq, nc)
        mm_rss = rss_mb(p.stderr)
        flop = 2.0 * nq * nc * args.dim
        if not have_faiss:
            rows.append((f"{nq}x{nc}", "multimat", mm_search, mm_wall, per(nq, mm_search), per(flop, mm_search) / 1e9,
                         100 * per(flop, mm_search) / 1e9 / peak, per(flop, mm_cpu) / 1e9, mm_rss))
            continue
        save = data / f"faiss_{nq}x{nc}.npy"
        fcmd = [sys.executable, __file__, "--faiss-child", "--queries", str(qf), "--candidates", str(cf),
                "-k", str(args.k), "--threads", str(args.threads), "--save", str(save)]
        fp, f_wall = timed(fcmd)
        fj = json.loads(fp.stdout.strip().splitlines()[-1])
        f_rss = rss_mb(fp.stderr)
        exact, as_set, max_diff = compare(out, save, cf, args.k)
        for name, search, cpu_s, wall, rss in (("multimat", mm_search, mm_cpu, mm_wall, mm_rss),
                                                ("faiss", fj["search_s"], fj["search_cpu_s"], f_wall, f_rss)):
            rows.append((f"{nq}x{nc}", name, search, wall, per(nq, search), per(flop, search) / 1e9,
                         100 * per(flop, search) / 1e9 / peak, per(flop, cpu_s) / 1e9, rss))
        print(f"{nq}x{nc}: multimat/faiss throughput ratio = {per(fj['search_s'], mm_search):.2f} (search wall), "
              f"{per(fj['search_cpu_s'], mm_cpu):.2f} (search CPU time), {f_wall / mm_wall:.2f} (end to end); "
              f"results agree exactly for {100 * exact:.1f} % of queries, as sets for {100 * as_set:.1f} %; "
              f"largest rank-by-rank similarity difference {max_diff:.1e}", flush=True)
    print()
    print(f"{'size':>14} {'tool':>9} {'search s':>9} {'e2e s':>7} {'queries/s':>10} {'GFLOP/s':>8} {'% peak':>7} "
          f"{'GFLOP/CPU-s':>11} {'peak MB':>8}")
    for r in rows:
        print(f"{r[0]:>14} {r[1]:>9} {r[2]:9.2f} {r[3]:7.2f} {r[4]:10.0f} {r[5]:8.1f} {r[6]:7.1f} {r[7]:11.1f} {r[8]:8.0f}")
    print(f"(uptime: {os.getloadavg()} load average at the end; +-20 % noise on this shared machine)")


if __name__ == "__main__":
    main()
