//! NVRTC: compiles the kernels of `kernels/*.cu` (the sources build.rs embedded, see
//! [`super::kernels`]) for a GPU architecture at run time, through cudarc's dynamically loaded
//! bindings. No GPU or driver is needed to compile, so CI compiles every kernel for sm_80 and
//! sm_90 to SASS, with ptxas, which also catches register and shared-memory overflows.
//!
//! cudarc panics when a library it needs is missing, so [`load`] checks for NVRTC first and
//! returns an error that says how to get it. `MULTIMAT_NVRTC_LIB`, if set, is the path of the
//! library to use (e.g. `.cache/nvrtc/lib/libnvrtc.so.13` from `scripts/bootstrap.sh`): it is
//! loaded before cudarc searches (with the `libnvrtc-builtins` beside it, which NVRTC opens by
//! name), and cudarc's search then finds it by its soname. Otherwise the
//! dynamic loader's usual search applies (`LD_LIBRARY_PATH`, …). The version and file of the
//! library actually loaded are reported, since cudarc tries `libnvrtc.so` before
//! `libnvrtc.so.13` and a stray system copy could win.

use anyhow::{anyhow, bail, Context, Result};
use cudarc::nvrtc::{result, sys};
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The architectures CI compiles every kernel for (A100, H100/H200).
pub const CI_ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// The one place NVRTC's options are decided. `arch` is `sm_XY` (SASS for that GPU: a cubin) or
/// `compute_XY` (PTX that the driver compiles for the GPU it finds). C++17: the dialect NVRTC
/// defaults to and that every kernel must keep to. `-lineinfo` lets profilers map SASS back to
/// source lines at no run-time cost. FMA contraction stays on (NVRTC's default), so GPU results
/// differ from the CPU reference by a few ulp — the tolerances of the GPU tests allow for it.
pub fn options(arch: &str) -> Vec<String> {
    vec![format!("--gpu-architecture={arch}"), "--std=c++17".to_string(), "-lineinfo".to_string()]
}

/// NVRTC, loaded. Obtain with [`load`].
#[derive(Debug)]
pub struct Nvrtc {
    /// (major, minor) from nvrtcVersion.
    pub version: (i32, i32),
    /// The library file the loader picked.
    pub library: String,
}

/// What a compilation produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// PTX text (NUL-terminated), for `compute_XY`.
    Ptx,
    /// A cubin (SASS) for `sm_XY`.
    Cubin,
}

/// One compiled `.cu`.
#[derive(Debug)]
pub struct Compiled {
    /// Stem of the `.cu` file.
    pub source: String,
    pub arch: String,
    pub kind: ImageKind,
    pub image: Vec<u8>,
    /// NVRTC's log (warnings), empty when there were none.
    pub log: String,
}

const HOW_TO_GET_IT: &str = "run ./scripts/bootstrap.sh (it downloads NVRTC 13.0 from PyPI into .cache/nvrtc) and run the tests \
                             through ./scripts/test.sh (it sets MULTIMAT_NVRTC_LIB), or point MULTIMAT_NVRTC_LIB at a libnvrtc.so.13";

/// Loads NVRTC once per process (from `MULTIMAT_NVRTC_LIB` if set); an error, not a panic, when
/// it is not there.
pub fn load() -> Result<&'static Nvrtc> {
    static LOADED: OnceLock<std::result::Result<Nvrtc, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let lib = std::env::var_os("MULTIMAT_NVRTC_LIB").map(PathBuf::from);
            probe(lib.as_deref()).map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// Finds NVRTC: `lib` (a library file) first if given, else the loader's search. Uncached; use
/// [`load`].
pub fn probe(lib: Option<&Path>) -> Result<Nvrtc> {
    let mut wanted = None;
    if let Some(path) = lib {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).context("the NVRTC library path contains a NUL byte")?;
        // Kept loaded for the life of the process (never dlclose'd): cudarc finds it by soname.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            let why = unsafe { CStr::from_ptr(libc::dlerror()) }.to_string_lossy().into_owned();
            bail!("NVRTC library {} cannot be loaded: {why}; {HOW_TO_GET_IT}", path.display());
        }
        wanted = Some(path.canonicalize().unwrap_or_else(|_| path.to_path_buf()));
        // NVRTC opens libnvrtc-builtins.so.<major>.<minor> by name at its first compilation,
        // through the loader's search only: load the one beside it now, so that name is found.
        let dir = path.parent().unwrap_or(Path::new("."));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("libnvrtc-builtins.so") {
                let c = CString::new(entry.path().as_os_str().as_encoded_bytes()).context("NUL byte in a library path")?;
                if unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) }.is_null() {
                    let why = unsafe { CStr::from_ptr(libc::dlerror()) }.to_string_lossy().into_owned();
                    bail!("{} cannot be loaded: {why}", entry.path().display());
                }
            }
        }
    }
    // SAFETY: only tries to open the candidate library names.
    if !unsafe { sys::is_culib_present() } {
        bail!("NVRTC not found: none of {:?} could be loaded; {HOW_TO_GET_IT}", cudarc::get_lib_name_candidates("nvrtc"));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); nvrtcVersion writes two ints.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|e| anyhow!("nvrtcVersion failed: {e:?}"))?;
    let library = loaded_library_path().unwrap_or_else(|| "(unknown file)".to_string());
    if let Some(wanted) = wanted {
        let got = Path::new(&library).canonicalize().unwrap_or_else(|_| PathBuf::from(&library));
        if got != wanted {
            bail!(
                "NVRTC {} was asked for, but cudarc loaded {library} (a copy found earlier by the loader's search); \
                 remove that copy from the search path",
                wanted.display()
            );
        }
    }
    Ok(Nvrtc { version: (major, minor), library })
}

/// The file of the NVRTC that cudarc loaded: the first candidate name that is already loaded
/// (cudarc keeps the first one that opens), located through one of its symbols.
fn loaded_library_path() -> Option<String> {
    for name in cudarc::get_lib_name_candidates("nvrtc") {
        let c = CString::new(name).ok()?;
        // SAFETY: RTLD_NOLOAD only looks up an already loaded object; the handle is released.
        unsafe {
            let handle = libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
            if handle.is_null() {
                continue;
            }
            let sym = libc::dlsym(handle, c"nvrtcVersion".as_ptr());
            let mut info: libc::Dl_info = std::mem::zeroed();
            let found = !sym.is_null() && libc::dladdr(sym, &mut info) != 0 && !info.dli_fname.is_null();
            let path = found.then(|| CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned());
            libc::dlclose(handle);
            if path.is_some() {
                return path;
            }
        }
    }
    None
}

impl Nvrtc {
    /// "NVRTC 13.0 (/path/libnvrtc.so.13)".
    pub fn describe(&self) -> String {
        format!("NVRTC {}.{} ({})", self.version.0, self.version.1, self.library)
    }

    /// Compiles `kernels/<stem>.cu` for `arch` (`sm_XY` → cubin, `compute_XY` → PTX). A failed
    /// compilation returns NVRTC's log, which names the file and line.
    pub fn compile(&self, stem: &str, arch: &str) -> Result<Compiled> {
        let source = super::kernels::source(stem).ok_or_else(|| anyhow!("no kernel source kernels/{stem}.cu is compiled in"))?;
        self.compile_source(stem, source, arch)
    }

    /// Compiles `source` (self-contained: NVRTC gets no include path) as `<stem>.cu` for `arch`.
    pub fn compile_source(&self, stem: &str, source: &str, arch: &str) -> Result<Compiled> {
        let kind = if arch.starts_with("sm_") {
            ImageKind::Cubin
        } else if arch.starts_with("compute_") {
            ImageKind::Ptx
        } else {
            bail!("architecture {arch:?}: expected sm_XY (cubin) or compute_XY (PTX)");
        };
        let src = CString::new(source).context("kernel source contains a NUL byte")?;
        let name = CString::new(format!("{stem}.cu")).context("source name contains a NUL byte")?;
        let prog = result::create_program(&src, Some(&name)).map_err(|e| anyhow!("nvrtcCreateProgram({stem}.cu): {e:?}"))?;
        let opts = options(arch);
        // SAFETY: `prog` is a live program until destroy_program below; src/name outlive it.
        let outcome = unsafe {
            let compiled = result::compile_program(prog, &opts);
            let log = result::get_program_log(prog).map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().trim().to_string()).unwrap_or_default();
            let image = match compiled {
                Err(e) => Err(anyhow!("NVRTC could not compile {stem}.cu for {arch} ({e:?}) with {opts:?}:\n{log}")),
                Ok(()) => match kind {
                    ImageKind::Ptx => result::get_ptx(prog).map(|p| p.iter().map(|&c| c as u8).collect::<Vec<u8>>()).map_err(|e| anyhow!("nvrtcGetPTX: {e:?}")),
                    ImageKind::Cubin => get_cubin(prog),
                },
            };
            let _ = result::destroy_program(prog);
            image.map(|image| (image, log))
        };
        let (image, log) = outcome?;
        Ok(Compiled { source: stem.to_string(), arch: arch.to_string(), kind, image, log })
    }

    /// Compiles every `kernels/*.cu` for `arch`; the first failure is the error.
    pub fn compile_all(&self, arch: &str) -> Result<Vec<Compiled>> {
        super::kernels::SOURCES.iter().map(|(stem, _)| self.compile(stem, arch)).collect()
    }
}

/// The cubin of a program compiled for an `sm_XY` architecture.
unsafe fn get_cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>> {
    let mut size = 0usize;
    sys::nvrtcGetCUBINSize(prog, &mut size).result().map_err(|e| anyhow!("nvrtcGetCUBINSize: {e:?}"))?;
    let mut image = vec![0u8; size];
    sys::nvrtcGetCUBIN(prog, image.as_mut_ptr().cast()).result().map_err(|e| anyhow!("nvrtcGetCUBIN: {e:?}"))?;
    Ok(image)
}
