//! Writing a file so that readers and crashes never see half of it: the one
//! helper behind the proxy's `--policy-cache` and `--addr-file` and the
//! control plane's `--addr-file`.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically and durably: the bytes go to a
/// temporary file in the same directory, which is synced, renamed over
/// `path`, and the directory is synced so the rename itself survives a
/// crash. A reader sees the old file or the new one, never a mix; a failed
/// write leaves the old file and no temporary behind.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Makes a rename in `dir` durable. Directories cannot be opened for syncing
/// on every platform; where they cannot, the rename is still atomic.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("addrs.json");
        write_atomically(&path, b"first").expect("write");
        write_atomically(&path, b"second").expect("overwrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["addrs.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache.json");
        write_atomically(&path, b"old").expect("write");
        // A directory in the way: the rename fails, nothing changes.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).expect("mkdir");
        std::fs::write(blocked.join("inner"), b"x").expect("fill");
        assert!(write_atomically(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        let count = std::fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(count, 2, "cache.json and blocked, no temporary");
    }
}
