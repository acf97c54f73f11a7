//! Every source file opens with a `//!` comment saying what it is for (ARCHITECTURE.md's code map
//! relies on it).

use std::path::Path;

fn visit(dir: &Path, missing: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            visit(&p, missing);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            if !text.trim_start().starts_with("//!") {
                missing.push(p.display().to_string());
            }
        }
    }
}

#[test]
fn every_module_has_a_doc_comment() {
    let mut missing = Vec::new();
    visit(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut missing);
    assert!(missing.is_empty(), "files without a //! module comment: {missing:?}");
}
