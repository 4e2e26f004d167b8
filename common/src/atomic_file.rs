//! Writing a file so that its readers see the old content or the new, never a mix: the bytes
//! go to a temporary file in the same folder (created new, never through a symbolic link),
//! which is flushed to disk and renamed over the target; then the folder itself is flushed, so
//! the rename survives a crash. Any failure before the rename removes the temporary file and
//! leaves the old file whole.
//!
//! Every file fleetgate writes for the operator (reports, summaries, baselines, certificates
//! and keys) goes through [`write()`].

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// How [`write()`] places the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Permission bits given to the file explicitly (the umask does not apply); `None`: those
    /// of a plain new file, 0666 less the umask.
    pub mode: Option<u32>,
    /// Whether a file already at the path is replaced; when false, anything there (a file, a
    /// directory, a symbolic link even to nothing) makes the write fail with
    /// [`AtomicWriteError::Exists`] and stays as it was.
    pub replace: bool,
}

impl WriteOptions {
    /// Replace any file at the path; permission bits as for a plain new file.
    pub const REPLACE: WriteOptions = WriteOptions {
        mode: None,
        replace: true,
    };
}

/// Why [`write()`] failed. The file at the path is as it was before the call, except for
/// [`AtomicWriteError::SyncFolder`], which comes after the new file is in place.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// No temporary file could be made in the target's folder.
    #[error("cannot create a file in {}: {error}", folder.display())]
    CreateTemporary {
        /// The target's folder.
        folder: PathBuf,
        /// The error (part of the message, so not chained as a source).
        error: io::Error,
    },
    /// The content could not be written or flushed to disk.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The target.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// Something is at the path and `replace` was false.
    #[error("{} already exists", path.display())]
    Exists {
        /// The target.
        path: PathBuf,
    },
    /// The temporary file could not be renamed over the target.
    #[error("cannot replace {}: {error}", path.display())]
    Rename {
        /// The target.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// The new file is in place, but its folder could not be flushed to disk.
    #[error("cannot flush the folder {}: {error}", folder.display())]
    SyncFolder {
        /// The target's folder.
        folder: PathBuf,
        /// The error.
        error: io::Error,
    },
}

/// Writes `bytes` to `path` atomically (see the module documentation). The folder must exist.
pub fn write(path: &Path, bytes: &[u8], options: WriteOptions) -> Result<(), AtomicWriteError> {
    write_with(path, options, |file| file.write_all(bytes))
}

/// As [`write()`], with the content written by `fill` into the temporary file.
fn write_with(
    path: &Path,
    options: WriteOptions,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), AtomicWriteError> {
    let folder = folder_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temporary =
        create_temporary(folder, &format!(".{name}."), options.mode.unwrap_or(0o666)).map_err(
            |error| AtomicWriteError::CreateTemporary {
                folder: folder.to_path_buf(),
                error,
            },
        )?;
    let write_error = |error| AtomicWriteError::Write {
        path: path.to_path_buf(),
        error,
    };
    if let Some(mode) = options.mode {
        // Set explicitly: the mode given at creation is reduced by the umask.
        temporary
            .as_file()
            .set_permissions(Permissions::from_mode(mode))
            .map_err(write_error)?;
    }
    fill(temporary.as_file_mut()).map_err(write_error)?;
    temporary.as_file().sync_all().map_err(write_error)?;
    let persisted = if options.replace {
        temporary.persist(path)
    } else {
        temporary.persist_noclobber(path)
    };
    // On failure the temporary file comes back in the error and is removed when dropped.
    if let Err(e) = persisted {
        return Err(if e.error.kind() == io::ErrorKind::AlreadyExists {
            AtomicWriteError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            AtomicWriteError::Rename {
                path: path.to_path_buf(),
                error: e.error,
            }
        });
    }
    sync_folder(folder).map_err(|error| AtomicWriteError::SyncFolder {
        folder: folder.to_path_buf(),
        error,
    })
}

/// Whether a new file can be made in `folder` (a read-only file system, permissions and ACLs
/// all say no here): one is made and removed at once.
pub fn check_folder_takes_files(folder: &Path) -> io::Result<()> {
    create_temporary(folder, ".fleetgate-probe-", 0o600).map(drop)
}

/// A new file in `folder` named `prefix` + random characters + `.tmp`, opened for writing with
/// `create_new` and `O_NOFOLLOW`, removed when dropped. The error is the operating system's,
/// without the random name.
fn create_temporary(folder: &Path, prefix: &str, mode: u32) -> io::Result<NamedTempFile> {
    let last_error = std::cell::Cell::new(None);
    tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".tmp")
        .make_in(folder, |candidate| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(NO_FOLLOW)
                .mode(mode)
                .open(candidate)
                .inspect_err(|e| last_error.set(e.raw_os_error()))
        })
        .map_err(|e| match last_error.get() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => e,
        })
}

/// `O_NOFOLLOW`: opening a symbolic link fails instead of opening its target.
const NO_FOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// The folder `path` is in (`.` for a bare file name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn sync_folder(folder: &Path) -> io::Result<()> {
    match File::open(folder).and_then(|f| f.sync_all()) {
        // Some file systems cannot flush a folder; the rename is then as durable as they allow.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, "old").unwrap();
        write(&path, b"new", WriteOptions::REPLACE).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names_in(dir.path()), ["report.json"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_byte_identical_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let old = b"{\"passed\": true}\n".repeat(300);
        std::fs::write(&path, &old).unwrap();
        let err = write_with(&path, WriteOptions::REPLACE, |file| {
            file.write_all(b"{\"partial\": ")?;
            Err(io::Error::from_raw_os_error(
                rustix::io::Errno::NOSPC.raw_os_error(),
            ))
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot write {}: No space left on device (os error 28)",
                path.display()
            )
        );
        assert_eq!(std::fs::read(&path).unwrap(), old);
        assert_eq!(names_in(dir.path()), ["report.json"]);
    }

    #[test]
    fn an_explicit_mode_ignores_the_umask_and_replaces_a_looser_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        let options = WriteOptions {
            mode: Some(0o600),
            replace: true,
        };
        write(&path, b"key", options).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        let public = dir.path().join("agent.pem");
        let options = WriteOptions {
            mode: Some(0o644),
            replace: true,
        };
        write(&public, b"cert", options).unwrap();
        assert_eq!(std::fs::metadata(&public).unwrap().mode() & 0o7777, 0o644);
    }

    #[test]
    fn without_replace_nothing_at_the_path_is_touched_not_even_a_dangling_link() {
        let dir = tempfile::tempdir().unwrap();
        let options = WriteOptions {
            mode: Some(0o600),
            replace: false,
        };
        let path = dir.path().join("a.key");
        std::fs::write(&path, "old").unwrap();
        let err = write(&path, b"new", options).unwrap_err();
        assert!(matches!(err, AtomicWriteError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");

        let link = dir.path().join("b.key");
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write(&link, b"new", options).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} already exists", link.display())
        );
        assert!(!target.exists());
        assert_eq!(names_in(dir.path()), ["a.key", "b.key"]);

        let fresh = dir.path().join("c.key");
        write(&fresh, b"new", options).unwrap();
        assert_eq!(std::fs::read(&fresh).unwrap(), b"new");
    }

    #[test]
    fn replacing_a_symbolic_link_replaces_the_link_not_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "untouched").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write(&link, b"new", WriteOptions::REPLACE).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"untouched");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read(&link).unwrap(), b"new");
    }

    #[test]
    fn a_missing_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/report.json");
        let err = write(&path, b"x", WriteOptions::REPLACE).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot create a file in {}: No such file or directory (os error 2)",
                dir.path().join("missing").display()
            )
        );
    }
}
