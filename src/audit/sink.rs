//! Where the writer thread puts audit lines: standard output, or a file
//! that is followed through log rotation.
//!
//! Before each write the writer asks [`Sink::follow`] whether the path
//! still names the open file. After a rename (logrotate's default
//! `create`) or a removal it no longer does, and the file is opened anew at
//! the path, so the next lines go to the new file instead of on into the
//! renamed one, which rotation would later compress or delete.
//! `copytruncate` needs nothing: lines are appended, so they continue at
//! the start of the truncated file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The writer's output.
pub(super) enum Sink {
    Stdout(std::io::Stdout),
    File { path: PathBuf, file: File },
}

impl Sink {
    /// The audit file at `path`, opened (or created, mode 0640) for
    /// appending.
    pub(super) fn file(path: &Path) -> std::io::Result<Sink> {
        Ok(Sink::File {
            path: path.to_owned(),
            file: open(path)?,
        })
    }

    /// Reopens the file when its path no longer names it; `Ok(true)` when
    /// it did. On an error the old file stays in use.
    pub(super) fn follow(&mut self) -> std::io::Result<bool> {
        let Sink::File { path, file } = self else {
            return Ok(false);
        };
        if !moved(path, file) {
            return Ok(false);
        }
        *file = open(path)?;
        Ok(true)
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(out) => out.write(buf),
            Sink::File { file, .. } => file.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => out.write_all(buf),
            Sink::File { file, .. } => file.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => out.flush(),
            Sink::File { file, .. } => file.flush(),
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    options
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("audit log {}: {e}", path.display())))
}

/// Whether `path` no longer names `file`: it is gone, or another file.
#[cfg(unix)]
fn moved(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(open) = file.metadata() else {
        return false;
    };
    match std::fs::metadata(path) {
        Ok(named) => (named.dev(), named.ino()) != (open.dev(), open.ino()),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Without inode numbers, the file is never taken for moved.
#[cfg(not(unix))]
fn moved(_: &Path, _: &File) -> bool {
    false
}
