//! `multimat-screen`: exact top-k cosine screening of query embeddings against candidates.

fn main() {
    if let Err(e) = multimat::screen::cli_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
