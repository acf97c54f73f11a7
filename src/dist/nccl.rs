//! NCCL, loaded at run time: the only file that calls into `libnccl`.
//!
//! The binary builds and runs without NCCL; it is opened (once per process) only when a
//! multi-rank job trains on `cuda`. cudarc's `nccl` module supplies the ABI types
//! (`ncclUniqueId`, `ncclComm_t`), but not the loader: cudarc's library search tries
//! `libnccl.so` and `libnccl.so.<cuda major>`, while NCCL 2 — e.g. PyPI's `nvidia-nccl-cu13` —
//! ships `libnccl.so.2`. So this file opens `MULTIMAT_NCCL_LIB` (a path) if set, else
//! `libnccl.so.2`, else `libnccl.so`, and resolves the six functions it calls with `dlsym`.
//!
//! Enums and results cross the boundary as `c_int` (never as Rust enums, which would be
//! undefined behaviour for a value a newer NCCL adds); the values below are NCCL 2's ABI.
//!
//! Bootstrapping is NCCL's usual one: rank 0 creates a unique id, every rank receives it (here
//! through `Dist::broadcast_bytes`, i.e. MPI) and calls `ncclCommInitRank`.

use anyhow::{anyhow, bail, Context, Result};
use cudarc::nccl::sys::{ncclComm_t, ncclUniqueId};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

/// `ncclFloat32` in NCCL 2's `ncclDataType_t`.
pub const NCCL_FLOAT32: c_int = 7;
/// `ncclFloat64` in NCCL 2's `ncclDataType_t` (SyncBN's per-channel sums).
pub const NCCL_FLOAT64: c_int = 8;
/// `ncclSum` in NCCL 2's `ncclRedOp_t`.
const NCCL_SUM: c_int = 0;
/// Bytes of an `ncclUniqueId` (`NCCL_UNIQUE_ID_BYTES`).
pub const UNIQUE_ID_BYTES: usize = 128;

type GetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type GetUniqueId = unsafe extern "C" fn(*mut ncclUniqueId) -> c_int;
type CommInitRank = unsafe extern "C" fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> c_int;
type CommDestroy = unsafe extern "C" fn(ncclComm_t) -> c_int;
type GetErrorString = unsafe extern "C" fn(c_int) -> *const c_char;
type AllReduce = unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, ncclComm_t, *mut c_void) -> c_int;
type AllGather = unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, ncclComm_t, *mut c_void) -> c_int;

/// The resolved entry points of one loaded NCCL.
pub struct Nccl {
    /// e.g. 22807 for 2.28.7.
    pub version: i32,
    get_unique_id: GetUniqueId,
    comm_init_rank: CommInitRank,
    comm_destroy: CommDestroy,
    get_error_string: GetErrorString,
    all_reduce: AllReduce,
    all_gather: AllGather,
}

const HOW_TO_GET_IT: &str = "install NCCL 2 (e.g. `pip install nvidia-nccl-cu13`) and point MULTIMAT_NCCL_LIB at its \
                             libnccl.so.2, or put it on LD_LIBRARY_PATH; or train with one rank per job";

/// NCCL, loaded once per process; an error (not a panic) when it cannot be found.
pub fn load() -> Result<&'static Nccl> {
    static LOADED: OnceLock<std::result::Result<Nccl, String>> = OnceLock::new();
    LOADED.get_or_init(|| open().map_err(|e| format!("{e:#}"))).as_ref().map_err(|e| anyhow!("{e}"))
}

fn dl_error() -> String {
    // SAFETY: dlerror returns a thread-local C string or NULL.
    let p = unsafe { libc::dlerror() };
    if p.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated, valid until the next dl* call on this thread.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

fn open() -> Result<Nccl> {
    let candidates: Vec<String> = match std::env::var("MULTIMAT_NCCL_LIB") {
        Ok(path) if !path.is_empty() => vec![path],
        _ => vec!["libnccl.so.2".into(), "libnccl.so".into()],
    };
    let mut tried = Vec::new();
    let mut handle = std::ptr::null_mut();
    for name in &candidates {
        let c = CString::new(name.as_str()).context("the NCCL library name contains a NUL byte")?;
        // SAFETY: opening a shared library; it stays loaded for the life of the process.
        handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if !handle.is_null() {
            break;
        }
        tried.push(format!("{name}: {}", dl_error()));
    }
    if handle.is_null() {
        bail!("NCCL not found ({}); {HOW_TO_GET_IT}", tried.join("; "));
    }
    let sym = |name: &str| -> Result<*mut c_void> {
        let c = CString::new(name).expect("symbol names have no NUL");
        // SAFETY: `handle` is a live library handle.
        let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
        if p.is_null() {
            bail!("the loaded NCCL has no {name} ({}): it is not NCCL 2", dl_error());
        }
        Ok(p)
    };
    // SAFETY: each symbol is NCCL 2's function of that name, whose C signature the type states.
    unsafe {
        let get_version: GetVersion = std::mem::transmute(sym("ncclGetVersion")?);
        let nccl = Nccl {
            version: 0,
            get_unique_id: std::mem::transmute::<*mut c_void, GetUniqueId>(sym("ncclGetUniqueId")?),
            comm_init_rank: std::mem::transmute::<*mut c_void, CommInitRank>(sym("ncclCommInitRank")?),
            comm_destroy: std::mem::transmute::<*mut c_void, CommDestroy>(sym("ncclCommDestroy")?),
            get_error_string: std::mem::transmute::<*mut c_void, GetErrorString>(sym("ncclGetErrorString")?),
            all_reduce: std::mem::transmute::<*mut c_void, AllReduce>(sym("ncclAllReduce")?),
            all_gather: std::mem::transmute::<*mut c_void, AllGather>(sym("ncclAllGather")?),
        };
        let mut v = 0;
        let r = get_version(&mut v);
        if r != 0 {
            bail!("ncclGetVersion failed: {}", nccl.error_string(r));
        }
        if v < 2_0000 {
            bail!("NCCL version code {v}: NCCL ≥ 2.0 is needed");
        }
        Ok(Nccl { version: v, ..nccl })
    }
}

impl Nccl {
    fn error_string(&self, code: c_int) -> String {
        // SAFETY: ncclGetErrorString returns a static C string for any code.
        let p = unsafe { (self.get_error_string)(code) };
        if p.is_null() {
            format!("NCCL error {code}")
        } else {
            // SAFETY: non-null static NUL-terminated string.
            format!("{} (NCCL error {code})", unsafe { CStr::from_ptr(p) }.to_string_lossy())
        }
    }

    fn check(&self, code: c_int, what: &str) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            bail!("{what} failed: {}", self.error_string(code))
        }
    }

    /// A new unique id (rank 0 makes it; the others receive its bytes).
    pub fn unique_id(&self) -> Result<[u8; UNIQUE_ID_BYTES]> {
        let mut id = ncclUniqueId { internal: [0; UNIQUE_ID_BYTES] };
        // SAFETY: writes one ncclUniqueId into `id`.
        self.check(unsafe { (self.get_unique_id)(&mut id) }, "ncclGetUniqueId")?;
        Ok(id.internal.map(|c| c as u8))
    }
}

/// One rank's NCCL communicator, destroyed on drop. Every collective is enqueued on the one
/// `stream` given to [`NcclComm::init`] and returns before it completes. One stream per
/// communicator, not a stream per call: NCCL does not promise that two collectives of one
/// communicator on different streams can progress concurrently, so collectives spread over two
/// streams could deadlock across ranks; on one stream they run in issue order, which is the same
/// on every rank. (`DeviceComm` gives it the communication stream and orders it against the
/// compute stream with events.)
pub struct NcclComm {
    nccl: &'static Nccl,
    comm: ncclComm_t,
    stream: *mut c_void,
}

// SAFETY: the communicator is used from the training thread only; the raw pointers are owned
// handles, not shared data.
unsafe impl Send for NcclComm {}

impl NcclComm {
    /// `ncclCommInitRank` with the id's bytes; collective: every rank calls it. The calling thread
    /// must have the device's context current; `stream` is the CUDA stream of every collective.
    pub fn init(nccl: &'static Nccl, id: &[u8], rank: usize, world_size: usize, stream: *mut c_void) -> Result<NcclComm> {
        if id.len() != UNIQUE_ID_BYTES {
            bail!("the NCCL unique id received from rank 0 has {} bytes, not {UNIQUE_ID_BYTES}", id.len());
        }
        let mut uid = ncclUniqueId { internal: [0; UNIQUE_ID_BYTES] };
        for (d, &s) in uid.internal.iter_mut().zip(id) {
            *d = s as c_char;
        }
        let mut comm: ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` receives the new communicator; the id is passed by value as NCCL expects.
        let r = unsafe { (nccl.comm_init_rank)(&mut comm, world_size as c_int, uid, rank as c_int) };
        nccl.check(r, &format!("ncclCommInitRank (rank {rank} of {world_size})"))?;
        Ok(NcclComm { nccl, comm, stream })
    }

    /// In place: `count` f32 at device address `buf` summed over ranks.
    ///
    /// # Safety
    /// `buf` is a live device allocation of at least `count` f32 on this communicator's device.
    pub unsafe fn all_reduce_sum_f32(&self, buf: u64, count: usize) -> Result<()> {
        self.all_reduce_sum(buf, count, NCCL_FLOAT32)
    }

    /// In place: `count` f64 at device address `buf` summed over ranks.
    ///
    /// # Safety
    /// `buf` is a live device allocation of at least `count` f64 (8·count bytes) on this
    /// communicator's device.
    pub unsafe fn all_reduce_sum_f64(&self, buf: u64, count: usize) -> Result<()> {
        self.all_reduce_sum(buf, count, NCCL_FLOAT64)
    }

    /// In place: `count` values of NCCL type `dtype` at `buf` summed over ranks.
    ///
    /// # Safety
    /// `buf` holds at least `count` values of `dtype`, live on this communicator's device.
    unsafe fn all_reduce_sum(&self, buf: u64, count: usize, dtype: c_int) -> Result<()> {
        let p = buf as *mut c_void;
        self.nccl.check((self.nccl.all_reduce)(p, p, count, dtype, NCCL_SUM, self.comm, self.stream), "ncclAllReduce")
    }

    /// `send` (`count` f32) of every rank, concatenated in rank order into `recv`.
    ///
    /// # Safety
    /// `send` holds `count` f32 and `recv` `count × world_size` f32, both live on this device.
    pub unsafe fn all_gather_f32(&self, send: u64, recv: u64, count: usize) -> Result<()> {
        self.nccl.check((self.nccl.all_gather)(send as *const c_void, recv as *mut c_void, count, NCCL_FLOAT32, self.comm, self.stream), "ncclAllGather")
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // SAFETY: the communicator was created by init and is destroyed once; a failure at exit
        // leaves nothing to clean up.
        let _ = unsafe { (self.nccl.comm_destroy)(self.comm) };
    }
}
