//! Mutation fuzzing of every reader, through the path an ingest takes (parse → plausibility
//! bounds → preprocess → crystal graphs → shard record checks), on real files from
//! `../shared/data` and the project's configs, read at test time and mutated in memory.
//!
//! Why a hand-written, stable-toolchain harness rather than cargo-fuzz/libFuzzer: it runs in the
//! ordinary `cargo test` suite on the stable toolchain (cargo-fuzz needs nightly and a separate
//! build), deterministically (ChaCha8 seeded per target and iteration, so any failure replays by
//! its label), and it can check what libFuzzer cannot express directly: a per-input memory bound
//! (a counting global allocator), a hang bound (a watchdog thread), and that an input the
//! pipeline accepts passes the shard record and plausibility checks. Coverage guidance is
//! replaced by structure-aware mutations: hostile numbers (huge counts, 1e308, NaN, −99999) put
//! in place of the numbers of headers, truncation, flipped bytes, invalid UTF-8 and NUL bytes,
//! deleted or repeated lines, gzip wrapping.
//!
//! Every input must: not panic; not allocate more than `MEMORY_BUDGET` live bytes (a single
//! request above `ALLOCATION_LIMIT` aborts the process after printing the input's label); finish
//! within `MULTIMAT_FUZZ_HANG_SECONDS` (default 120 s, the watchdog aborts with the label); be
//! either accepted as a record that passes `check_record` and the default plausibility bounds,
//! or rejected with a message naming the file.
//!
//! The suite runs `DEFAULT_EXECS` mutations per target (seed 1) and replays
//! `tests/fuzz-corpus/<target>/*`, small hand-written reproductions of every class found (never
//! copies of the shared data). A longer campaign: `scripts/fuzz.sh` (see there); failing inputs
//! of a campaign are written to `target/fuzz-failures/` and replay with
//! `MULTIMAT_FUZZ_REPLAY=<target>:<seed>:<iteration>`.

use multimat::ingest::{process_input, Input};
use multimat::material::{MaterialRecord, Structure};
use multimat::plausibility::Bounds;
use multimat::shard::{check_record, ShardMeta, TargetSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Memory accounting.

/// Live bytes one input may add (real files here are < 10 MB; parsing and graphs stay far below).
const MEMORY_BUDGET: usize = 1 << 30;
/// A single request above this is a memory bomb: print the label and abort.
const ALLOCATION_LIMIT: usize = 3 << 30;

struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LABEL: Mutex<String> = Mutex::new(String::new());
/// The label as raw bytes for the allocator's abort message (which must not allocate or lock).
static LABEL_BYTES: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];

fn set_label(label: &str) {
    let bytes = label.as_bytes();
    for (k, slot) in LABEL_BYTES.iter().enumerate() {
        let mut word = [0u8; 8];
        for (j, b) in word.iter_mut().enumerate() {
            *b = bytes.get(k * 8 + j).copied().unwrap_or(0);
        }
        slot.store(u64::from_le_bytes(word), Ordering::Relaxed);
    }
    *LABEL.lock().unwrap() = label.to_string();
}

fn write_stderr(bytes: &[u8]) {
    // SAFETY: write(2) on a valid buffer; no allocation.
    unsafe {
        libc::write(2, bytes.as_ptr().cast(), bytes.len());
    }
}

fn abort_with_label(reason: &[u8]) -> ! {
    write_stderr(b"\nfuzz: ");
    write_stderr(reason);
    write_stderr(b" in input ");
    let mut buf = [0u8; 256];
    for (k, slot) in LABEL_BYTES.iter().enumerate() {
        buf[k * 8..k * 8 + 8].copy_from_slice(&slot.load(Ordering::Relaxed).to_le_bytes());
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    write_stderr(&buf[..len]);
    write_stderr(b"\n");
    std::process::abort();
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT {
            abort_with_label(b"memory bomb (single allocation above 3 GiB)");
        }
        let p = System.alloc(layout);
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_LIMIT {
            abort_with_label(b"memory bomb (single allocation above 3 GiB)");
        }
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

// ---------------------------------------------------------------------------------------------
// Hang watchdog: one input at a time (the cases hold `SERIAL`), so one start time suffices.

static CASE_START_MS: AtomicU64 = AtomicU64::new(0);
static WATCHDOG: AtomicBool = AtomicBool::new(false);
static SERIAL: Mutex<()> = Mutex::new(());
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

fn start_watchdog() {
    if WATCHDOG.swap(true, Ordering::SeqCst) {
        return;
    }
    let limit_s: u64 = env_or("MULTIMAT_FUZZ_HANG_SECONDS", 120);
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        let start = CASE_START_MS.load(Ordering::Relaxed);
        if start != 0 && now_ms().saturating_sub(start) > limit_s * 1000 {
            abort_with_label(b"hang (input ran past MULTIMAT_FUZZ_HANG_SECONDS)");
        }
    });
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Targets and seeds.

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel)
}

fn read_plain(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).unwrap();
        out
    } else {
        raw
    }
}

/// The first `n` files (sorted) of a shared-data folder.
fn first_files(dir: &str, n: usize) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data(dir)).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v.truncate(n);
    v
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Structure,
    Dos,
    ChargeDensity,
    Matminer,
    /// JARVIS/SNUMAT JSON lists (`io::jarvis`).
    Jarvis,
    /// Materials Project summary documents (`io::mp_docs`).
    MpSummary,
    Labels,
    Texts,
    PretrainConfig,
    FinetuneConfig,
}

struct Target {
    name: &'static str,
    kind: Kind,
    /// (file name the mutated input is written under, content).
    seeds: Vec<(String, Vec<u8>)>,
}

const SI_CIF_ID: &str = "mp-149";

fn si_structure() -> Structure {
    Structure {
        lattice: [[3.867422, 0.0, 0.0], [1.933711, 3.349287, 0.0], [0.0, -2.232856, 3.157737]],
        species: vec![14, 14],
        frac_coords: vec![[0.0, 0.0, 0.0], [0.75, 0.5, 0.75]],
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A small matminer "split" frame made from two real pymatgen structures.
fn matminer_seed() -> Vec<u8> {
    let mut rows = Vec::new();
    for p in first_files("mp-multimodal/structures", 2) {
        let s: serde_json::Value = serde_json::from_slice(&read_plain(&p)).unwrap();
        let id = p.file_stem().unwrap().to_string_lossy().to_string();
        rows.push(serde_json::json!([id, s, 120.5, [[1.0, 2.0], [3.0, 4.0]]]));
    }
    serde_json::to_vec(&serde_json::json!({"columns": ["material_id", "structure", "K_VRH", "elastic_tensor"], "index": [0, 1], "data": rows}))
        .unwrap()
}

fn targets() -> Vec<Target> {
    let seeds = |files: Vec<PathBuf>, name: &dyn Fn(&Path) -> String| -> Vec<(String, Vec<u8>)> {
        files.iter().map(|p| (name(p), read_plain(p))).collect()
    };
    let keep = |fixed: &'static str| move |_: &Path| fixed.to_string();
    let stem_json = |p: &Path| p.file_name().unwrap().to_string_lossy().replace(".gz", "");
    let first_lines = |p: &Path, n: usize| -> Vec<u8> {
        let text = String::from_utf8(read_plain(p)).unwrap();
        text.lines().take(n).map(|l| format!("{l}\n")).collect::<String>().into_bytes()
    };
    vec![
        Target { name: "cif", kind: Kind::Structure, seeds: seeds(first_files("mp-multimodal/cif", 3), &|p| p.file_name().unwrap().to_string_lossy().into()) },
        Target {
            name: "poscar",
            kind: Kind::Structure,
            seeds: seeds(vec![data("vasp-raw/Si_mp-149/CONTCAR.gz"), data("vasp-raw/LiH_mp-23703/CONTCAR"), data("vasp-raw/Al_mp-134/CONTCAR.gz")], &keep("POSCAR")),
        },
        Target { name: "pymatgen_structure", kind: Kind::Structure, seeds: seeds(first_files("mp-multimodal/structures", 3), &stem_json) },
        Target {
            name: "chgcar",
            kind: Kind::ChargeDensity,
            seeds: seeds(vec![data("vasp-raw/Li_bcc/CHGCAR.nospin.gz"), first_files("mp-multimodal/chgcar", 1).remove(0)], &keep("CHGCAR")),
        },
        Target { name: "vasprun", kind: Kind::Dos, seeds: seeds(vec![data("vasp-raw/Al_mp-134/vasprun.xml.gz")], &keep("vasprun.xml")) },
        Target { name: "doscar", kind: Kind::Dos, seeds: seeds(vec![data("vasp-raw/Si_mp-149/DOSCAR.gz"), data("vasp-raw/Al_mp-134/DOSCAR.gz")], &keep("DOSCAR")) },
        Target { name: "pymatgen_dos", kind: Kind::Dos, seeds: seeds(vec![data("vasp-raw/NiO/dos-pymatgen.json.gz"), first_files("mp-multimodal/dos", 1).remove(0)], &keep("dos.json")) },
        Target { name: "matminer", kind: Kind::Matminer, seeds: vec![("elastic.json".into(), matminer_seed())] },
        // Hand-written fixtures (tests/fixtures/README.md): no real SNUMAT/JARVIS/MP file is at hand.
        Target {
            name: "jarvis",
            kind: Kind::Jarvis,
            seeds: vec![
                ("snumat.json".into(), read_plain(&fixture("snumat_bandgap_handwritten.json"))),
                ("dft_3d.json".into(), read_plain(&fixture("jarvis_dft3d_handwritten.json"))),
            ],
        },
        Target { name: "mp_summary", kind: Kind::MpSummary, seeds: vec![("summary.json".into(), read_plain(&fixture("mp_docs/summary.json")))] },
        Target {
            name: "pymatgen_chgcar",
            kind: Kind::ChargeDensity,
            seeds: vec![("mp-149.chgcar.json".into(), read_plain(&fixture("mp_docs/mp-149.chgcar.json")))],
        },
        Target { name: "labels_csv", kind: Kind::Labels, seeds: vec![("labels.csv".into(), read_plain(&data("mp-multimodal/materials.csv")))] },
        Target { name: "texts_jsonl", kind: Kind::Texts, seeds: vec![("texts.jsonl".into(), first_lines(&data("text/mp-multimodal-robocrys.jsonl"), 8))] },
        Target {
            name: "pretrain_config",
            kind: Kind::PretrainConfig,
            seeds: vec![("pretrain.toml".into(), read_plain(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/mp-multimodal-cpu.toml")))],
        },
        Target {
            name: "finetune_config",
            kind: Kind::FinetuneConfig,
            seeds: vec![("finetune.toml".into(), read_plain(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/finetune-matminer-kvrh.toml")))],
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// Mutations.

const HOSTILE_NUMBERS: &[&str] = &[
    "4294967297", "9999999999", "18446744073709551615", "18446744073709551616", "2147483648", "1000 1000 1000", "-1", "0",
    "1e9", "1e5", "1e30", "-99999", "1e308", "-1e308", "1e23", "-1e23", "1e19", "NaN", "nan", "inf", "-Infinity", "1e-300",
    "65536", "3.4e38", "*******", "1D+400", "0.0", "", "1e6", "100000000",
];

/// Byte ranges of number-like tokens (a digit, optionally after a sign or dot, then
/// digits/./e/E/+/-), at most 50 000.
fn number_tokens(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() && out.len() < 50_000 {
        let starts = bytes[i].is_ascii_digit()
            || ((bytes[i] == b'-' || bytes[i] == b'.') && bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit()));
        let boundary = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if starts && boundary {
            let mut j = i + 1;
            while j < bytes.len() && (bytes[j].is_ascii_digit() || b".eE+-".contains(&bytes[j])) {
                j += 1;
            }
            out.push((i, j));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

fn line_starts(bytes: &[u8]) -> Vec<usize> {
    std::iter::once(0).chain(bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1)).filter(|&i| i < bytes.len()).collect()
}

/// A mutated copy of `seed` and a short description of what was done.
fn mutate(seed: &[u8], rng: &mut ChaCha8Rng) -> (Vec<u8>, String) {
    let mut data = seed.to_vec();
    let mut what = Vec::new();
    let rounds = rng.random_range(1..=3);
    for _ in 0..rounds {
        if data.is_empty() {
            break;
        }
        match rng.random_range(0..10) {
            0..=3 => {
                let tokens = number_tokens(&data);
                if tokens.is_empty() {
                    continue;
                }
                // Headers hold the sizes: favour the first 60 numbers.
                let k = if rng.random_bool(0.7) { rng.random_range(0..tokens.len().min(60)) } else { rng.random_range(0..tokens.len()) };
                let (a, b) = tokens[k];
                let v = HOSTILE_NUMBERS[rng.random_range(0..HOSTILE_NUMBERS.len())];
                data.splice(a..b, v.bytes());
                what.push(format!("number {k} → {v:?}"));
            }
            4 => {
                let cut = rng.random_range(0..data.len());
                data.truncate(cut);
                what.push(format!("truncate at {cut}"));
            }
            5 => {
                let n = rng.random_range(1..=4);
                for _ in 0..n {
                    let i = rng.random_range(0..data.len());
                    data[i] ^= 1 << rng.random_range(0..8);
                }
                what.push(format!("flip {n} bits"));
            }
            6 => {
                let insert: &[u8] = [&b"\0"[..], b"\xff\xfe", b"\"", b"'", b"[", b"\n", b";", b"#", b"\r\n", b"{"][rng.random_range(0..10)];
                let i = rng.random_range(0..=data.len());
                data.splice(i..i, insert.iter().copied());
                what.push(format!("insert {insert:?} at {i}"));
            }
            7 | 8 => {
                let starts = line_starts(&data);
                let k = if rng.random_bool(0.7) { rng.random_range(0..starts.len().min(40)) } else { rng.random_range(0..starts.len()) };
                let a = starts[k];
                let b = starts.get(k + 1).copied().unwrap_or(data.len());
                if rng.random_bool(0.5) {
                    data.drain(a..b);
                    what.push(format!("delete line {}", k + 1));
                } else {
                    let line = data[a..b].to_vec();
                    data.splice(b..b, line);
                    what.push(format!("repeat line {}", k + 1));
                }
            }
            _ => {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&data).unwrap();
                data = enc.finish().unwrap();
                if rng.random_bool(0.5) {
                    let cut = rng.random_range(0..data.len());
                    data.truncate(cut);
                    what.push(format!("gzip, cut at {cut}"));
                } else {
                    what.push("gzip".into());
                }
                break; // further byte edits would only corrupt the deflate stream
            }
        }
    }
    (data, what.join("; "))
}

// ---------------------------------------------------------------------------------------------
// Running one input.

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    execs: usize,
    accepted: usize,
    rejected: usize,
    failures: usize,
}

/// Ingest one record the way `multimat ingest` does and check what comes out.
fn check_ingest(input: &Input, meta: &ShardMeta, file: &str) -> Result<bool, String> {
    match process_input(input, meta, true) {
        Ok(rec) => {
            check_record(&rec, meta).map_err(|e| format!("accepted record fails check_record: {e}"))?;
            let bounds = Bounds::default();
            if let Some(s) = &rec.structure {
                bounds.check_structure(s).map_err(|e| format!("accepted structure is implausible: {e:#}"))?;
            }
            if let Some(d) = &rec.dos {
                bounds.check_processed_dos(&d.densities).map_err(|e| format!("accepted DOS is implausible: {e:#}"))?;
            }
            let units = |n: &str| meta.targets.get(n).map(|t| t.units.clone()).unwrap_or_default();
            bounds.check_targets(&rec.targets, units).map_err(|e| format!("accepted targets are implausible: {e:#}"))?;
            Ok(true)
        }
        Err(reject) => {
            if !reject.file.contains(file) && !reject.reason.contains(file) {
                return Err(format!("reject does not name the file {file}: {reject:?}"));
            }
            Ok(false)
        }
    }
}

fn meta_for(targets: &std::collections::BTreeMap<String, Vec<f64>>) -> ShardMeta {
    let mut meta = ShardMeta::default();
    for (name, v) in targets {
        meta.targets.insert(name.clone(), TargetSpec { width: v.len(), units: multimat::ingest::default_units(name).into() });
    }
    meta
}

/// Ok(accepted?) or a failure description.
fn run_one(kind: Kind, path: &Path) -> Result<bool, String> {
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let names_file = |e: &anyhow::Error| {
        let msg = format!("{e:#}");
        if msg.contains(&file) { Ok(false) } else { Err(format!("error does not name the file {file}: {msg}")) }
    };
    let mut input = Input { id: SI_CIF_ID.into(), ..Default::default() };
    match kind {
        Kind::Structure => {
            input.files.structure = Some(path.to_path_buf());
            check_ingest(&input, &ShardMeta::default(), &file)
        }
        Kind::Dos => {
            input.files.dos = Some(path.to_path_buf());
            check_ingest(&input, &ShardMeta::default(), &file)
        }
        Kind::ChargeDensity => {
            input.files.charge_density = Some(path.to_path_buf());
            check_ingest(&input, &ShardMeta::default(), &file)
        }
        Kind::Matminer | Kind::Jarvis | Kind::MpSummary => match match kind {
            Kind::Jarvis => multimat::io::jarvis::read_dataset(path),
            Kind::MpSummary => multimat::io::mp_docs::read_summary_docs(path),
            _ => multimat::io::matminer::read_dataset(path),
        } {
            Err(e) => names_file(&e),
            Ok(rows) => {
                let mut any = false;
                for row in rows {
                    match row {
                        Err(e) => {
                            names_file(&e)?;
                        }
                        Ok(record) => {
                            let meta = meta_for(&record.targets);
                            let input = Input { id: record.id.clone(), record, ..Default::default() };
                            any |= check_ingest(&input, &meta, &file)?;
                        }
                    }
                }
                Ok(any)
            }
        },
        Kind::Labels => match multimat::io::labels::read_csv(path) {
            Err(e) => names_file(&e),
            Ok(parsed) => {
                let mut any = false;
                for (id, targets) in parsed.labels {
                    let mut record = MaterialRecord { id: id.clone(), structure: Some(si_structure()), targets, ..Default::default() };
                    record.provenance.sources.insert("targets".into(), format!("{}#{id}", path.display()));
                    let meta = meta_for(&record.targets);
                    any |= check_ingest(&Input { id, record, ..Default::default() }, &meta, &file)?;
                }
                Ok(any)
            }
        },
        Kind::Texts => match multimat::io::text::read_descriptions_jsonl(path) {
            Err(e) => names_file(&e),
            Ok(texts) => {
                let mut any = false;
                for (id, text) in texts {
                    let mut record = MaterialRecord { id: id.clone(), structure: Some(si_structure()), text: Some(text), ..Default::default() };
                    record.provenance.sources.insert("text".into(), format!("{}#1", path.display()));
                    any |= check_ingest(&Input { id, record, ..Default::default() }, &ShardMeta::default(), &file)?;
                }
                Ok(any)
            }
        },
        Kind::PretrainConfig => match multimat::train::config::PretrainConfig::load(path, &[]) {
            Err(e) => names_file(&e),
            Ok(c) => c.check().map(|_| true).map_err(|e| format!("accepted config fails check: {e:#}")),
        },
        Kind::FinetuneConfig => match multimat::finetune::config::FinetuneConfig::load(path, &[]) {
            Err(e) => names_file(&e),
            Ok(c) => c.check().map(|_| true).map_err(|e| format!("accepted config fails check: {e:#}")),
        },
    }
}

/// Run one input under the panic, memory and hang guards; a failure description or the outcome.
fn guarded(kind: Kind, label: &str, bytes: &[u8], name: &str, dir: &Path) -> Result<bool, String> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    set_label(label);
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    CASE_START_MS.store(now_ms(), Ordering::Relaxed);
    let result = std::panic::catch_unwind(|| run_one(kind, &path));
    CASE_START_MS.store(0, Ordering::Relaxed);
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let outcome = match result {
        Err(panic) => {
            let msg = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(format!("panic: {}", msg.unwrap_or_default()))
        }
        Ok(r) => r,
    };
    if grew > MEMORY_BUDGET {
        return Err(format!("used {grew} bytes, more than the {MEMORY_BUDGET} budget"));
    }
    outcome
}

fn save_failure(label: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(label.replace([':', ' ', '/'], "_"));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Executions per target in the suite (deterministic); `MULTIMAT_FUZZ_EXECS` overrides it and
/// `MULTIMAT_FUZZ_SECONDS` turns it into a time budget per target (for campaigns).
const DEFAULT_EXECS: usize = 60;

fn fuzz_target(target: &Target, seed: u64, dir: &Path, failures: &mut Vec<String>) -> Counts {
    let execs: usize = env_or("MULTIMAT_FUZZ_EXECS", DEFAULT_EXECS);
    let seconds: u64 = env_or("MULTIMAT_FUZZ_SECONDS", 0);
    let only: Option<(String, u64, usize)> = std::env::var("MULTIMAT_FUZZ_REPLAY").ok().and_then(|v| {
        let mut it = v.split(':');
        Some((it.next()?.to_string(), it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    });
    let started = Instant::now();
    let mut counts = Counts::default();
    let mut iteration = 0usize;
    loop {
        let done = if seconds > 0 { started.elapsed().as_secs() >= seconds } else { iteration >= execs };
        if done && only.is_none() {
            break;
        }
        if let Some((t, s, i)) = &only {
            if t != target.name || *s != seed {
                break;
            }
            if iteration < *i {
                iteration = *i;
            } else if iteration > *i {
                break;
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (iteration as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ fxhash(target.name));
        let (name, seed_bytes) = &target.seeds[rng.random_range(0..target.seeds.len())];
        let (bytes, what) = mutate(seed_bytes, &mut rng);
        let label = format!("{}:{seed}:{iteration}", target.name);
        counts.execs += 1;
        match guarded(target.kind, &label, &bytes, name, dir) {
            Ok(true) => counts.accepted += 1,
            Ok(false) => counts.rejected += 1,
            Err(msg) => {
                counts.failures += 1;
                let saved = save_failure(&label, &bytes);
                failures.push(format!("{label} ({what}; input saved as {}): {msg}", saved.display()));
            }
        }
        iteration += 1;
    }
    counts
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

#[test]
fn every_reader_survives_mutated_real_files() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    start_watchdog();
    let seed: u64 = env_or("MULTIMAT_FUZZ_SEED", 1);
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut table = String::from("target               execs  accepted  rejected  failures\n");
    for target in targets() {
        // The unmutated seeds must be accepted, or the mutations explore nothing but rejects.
        for (name, bytes) in &target.seeds {
            let label = format!("{}:seed {name}", target.name);
            match guarded(target.kind, &label, bytes, name, dir.path()) {
                Ok(true) => {}
                other => failures.push(format!("{label}: the real file is not accepted: {other:?}")),
            }
        }
        let c = fuzz_target(&target, seed, dir.path(), &mut failures);
        table += &format!("{:<20} {:>6} {:>9} {:>9} {:>9}\n", target.name, c.execs, c.accepted, c.rejected, c.failures);
    }
    println!("fuzz seed {seed}:\n{table}");
    assert!(failures.is_empty(), "{} failing inputs:\n{}\n{table}", failures.len(), failures.join("\n"));
}

/// Every crash ever found, reduced by hand to a small file of our own (`tests/fuzz-corpus/<target>/`),
/// must stay fixed: rejected, with the file named, within the memory and time bounds.
#[test]
fn crash_corpus_replays_cleanly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    start_watchdog();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let dir = tempfile::tempdir().unwrap();
    let kinds: std::collections::HashMap<&str, Kind> = targets().iter().map(|t| (t.name, t.kind)).collect();
    let mut failures = Vec::new();
    let mut replayed = 0;
    let mut targets_dirs: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    targets_dirs.sort();
    for target_dir in targets_dirs {
        let target = target_dir.file_name().unwrap().to_string_lossy().to_string();
        let kind = *kinds.get(target.as_str()).unwrap_or_else(|| panic!("tests/fuzz-corpus/{target}: unknown target"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&target_dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            // The corpus file name is the name the reader sees after an optional "NN-" prefix
            // (so several POSCARs can sit side by side).
            let fname = f.file_name().unwrap().to_string_lossy().to_string();
            let name = fname.split_once("--").map_or(fname.as_str(), |(_, n)| n).to_string();
            let bytes = std::fs::read(&f).unwrap();
            let label = format!("corpus {target}/{fname}");
            replayed += 1;
            // Every corpus file is a known-bad input: it must be rejected, not accepted.
            match guarded(kind, &label, &bytes, &name, dir.path()) {
                Ok(false) => {}
                Ok(true) => failures.push(format!("{label}: accepted")),
                Err(msg) => failures.push(format!("{label}: {msg}")),
            }
        }
    }
    assert!(replayed >= 10, "the corpus holds only {replayed} files");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
