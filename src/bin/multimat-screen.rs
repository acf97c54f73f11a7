//! `multimat-screen`: exact top-k cosine screening of query embeddings against candidates.

fn main() {
    multimat::engine::host_memory::keep_freed_memory_for_reuse();
    multimat::cli::exit_quietly_when_stdout_closes();
    if let Err(e) = multimat::screen::cli_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
