//! Subcommands of the `multimat` binary; one file per subcommand, each with its clap `Args`
//! and a `run` function. The binary in `src/bin/multimat.rs` only dispatches.

pub mod ingest;
pub mod validate;
pub mod pretrain;
pub mod device;
pub mod embed_text;
pub mod synth;
pub mod bench;
pub mod doctor;
pub mod demo;
pub mod finetune;
pub mod sweep;
pub mod table1;
pub mod embed;
pub mod eval;
pub mod plot;
pub mod predict;
pub mod config;
pub mod export;

/// `multimat … | head` closes stdout before the output ends. Rust ignores SIGPIPE, so the next
/// `println!` fails with EPIPE and panics with a backtrace. Restoring the default disposition
/// ends the process quietly instead, as `cat` or `grep` would. The binaries call this first thing
/// in `main`.
pub fn exit_quietly_when_stdout_closes() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
