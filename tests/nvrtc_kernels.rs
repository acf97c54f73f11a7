//! NVRTC compiles every `kernels/*.cu` (the sources embedded in the binary) for sm_80 and sm_90
//! down to SASS, so ptxas's register and shared-memory limits are checked too, with no GPU.
//! Needs NVRTC: `./scripts/bootstrap.sh` downloads it and `./scripts/test.sh` points
//! MULTIMAT_NVRTC_LIB at it; without it these tests fail and say so.

use multimat::engine::backend::{kernels, nvrtc};

fn nvrtc() -> &'static nvrtc::Nvrtc {
    nvrtc::load().unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn every_kernel_source_compiles_to_sass_for_sm_80_and_sm_90() {
    let nvrtc = nvrtc();
    println!("{}", nvrtc.describe());
    assert!(nvrtc.version.0 >= 12, "{}: kernels are written for CUDA 12/13", nvrtc.describe());
    assert!(!kernels::SOURCES.is_empty());
    for arch in nvrtc::CI_ARCHS {
        let compiled = nvrtc.compile_all(arch).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(compiled.len(), kernels::SOURCES.len());
        for c in &compiled {
            assert_eq!(c.kind, nvrtc::ImageKind::Cubin);
            assert!(c.image.starts_with(b"\x7fELF"), "{}.cu for {arch}: not an ELF cubin", c.source);
            // Every exported kernel is an entry point of its module, under its extern "C" name.
            for k in kernels::kernels_in(&c.source) {
                let needle = format!("\0{}\0", k.name);
                assert!(c.image.windows(needle.len()).any(|w| w == needle.as_bytes()), "{}.cu for {arch}: no symbol {}", c.source, k.name);
            }
            if !c.log.is_empty() {
                println!("{}.cu ({arch}) warnings:\n{}", c.source, c.log);
            }
        }
    }
}

#[test]
fn ptx_for_a_virtual_architecture_names_every_kernel() {
    let ptx = nvrtc().compile("activation", "compute_90").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(ptx.kind, nvrtc::ImageKind::Ptx);
    let text = String::from_utf8_lossy(&ptx.image);
    for k in kernels::kernels_in("activation") {
        assert!(text.contains(&format!(".entry {}(", k.name)), "no .entry for {}", k.name);
    }
}

#[test]
fn compile_errors_and_ptxas_limits_are_reported_with_the_log() {
    let nvrtc = nvrtc();
    let e = nvrtc.compile_source("broken", "extern \"C\" __global__ void k(float* x) {\n  x[0] = no_such_name;\n}\n", "sm_80").unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("broken.cu") && msg.contains("no_such_name") && msg.contains("sm_80"), "{msg}");
    // 256 KiB of static shared memory: the front end accepts it, ptxas (SASS for sm_90) must not.
    let too_big = "extern \"C\" __global__ void k(float* x) {\n  __shared__ float big[65536];\n  big[threadIdx.x] = x[threadIdx.x];\n  __syncthreads();\n  x[threadIdx.x] = big[65535 - threadIdx.x];\n}\n";
    let msg = format!("{:#}", nvrtc.compile_source("too_big", too_big, "sm_90").unwrap_err());
    assert!(msg.contains("too_big") && msg.to_lowercase().contains("shared"), "{msg}");
    assert!(nvrtc.compile("no_such_source", "sm_80").is_err());
    assert!(nvrtc.compile("activation", "gfx90a").is_err());
}

#[test]
fn a_missing_library_is_an_error_that_says_how_to_get_nvrtc() {
    let e = nvrtc::probe(Some(std::path::Path::new("/nonexistent/libnvrtc.so.13"))).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("/nonexistent/libnvrtc.so.13") && msg.contains("./scripts/bootstrap.sh"), "{msg}");
}
