//! General helpers with no knowledge of the rest of the server: ids, URLs, private files,
//! secret comparison, process figures. Every server module may use them; they use none.

use rand::distributions::Alphanumeric;
use rand::Rng;
use std::path::Path;
use subtle::ConstantTimeEq;

/// A random alphanumeric string of `len` characters.
pub fn random_id(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Resolves an endpoint path against the server's public base URL.
pub fn absolute(base_url: &str, path: &str, websocket: bool) -> String {
    if path.contains("://") {
        return path.to_string();
    }
    let base = base_url.trim_end_matches('/');
    let base = if websocket { base.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1) } else { base.to_string() };
    format!("{base}{path}")
}

/// Writes a file readable only by its owner.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Creates `dir` (and its parents) readable by this user only when it does not exist yet.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes the files at `paths` that exist readable by this user only.
pub fn make_private(paths: &[std::path::PathBuf]) -> std::io::Result<()> {
    #[cfg(unix)]
    for p in paths.iter().filter(|p| p.exists()) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = paths;
    Ok(())
}

/// Compares two secrets in time independent of where they differ (and of their lengths).
pub fn secrets_match(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// Resident set size of this process in MiB (Linux), 0 where unknown.
pub fn rss_mb() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(0.0);
    (pages * 4096.0 / 1_048_576.0 * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare_by_value() {
        assert!(super::secrets_match("abc", "abc"));
        assert!(!super::secrets_match("abc", "abd"));
        assert!(!super::secrets_match("", "abc"));
        assert!(!super::secrets_match("abcd", "abc"));
    }
}
