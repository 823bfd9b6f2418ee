//! Policy files on disk, for tests that run the binary, reload or watch.

use std::path::{Path, PathBuf};

/// Writes `text` to `dir/name` (replacing what was there) and returns the path.
pub fn policy_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write policy file");
    path
}
