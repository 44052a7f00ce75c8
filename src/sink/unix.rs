//! The unix sink's listener: the socket file is created with its mode before the first
//! accept, a stale socket left by a previous run is replaced, and the file is removed on exit.
//! A socket systemd passed is used as it is: its mode is the `.socket` unit's `SocketMode=`,
//! and its file stays on exit, because systemd owns it and listens on it again.

pub mod settings;

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::SinkError;

/// A unix listener that removes its socket file when dropped, if it created it.
#[derive(Debug)]
pub struct UnixBinding {
    /// The listener.
    pub listener: tokio::net::UnixListener,
    /// The socket file to remove; `None` for a socket systemd passed.
    path: Option<PathBuf>,
}

impl Drop for UnixBinding {
    fn drop(&mut self) {
        // Only remove what is still our socket.
        if let Some(path) = &self.path {
            if is_socket(path) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Uses a listener systemd passed for `path`.
pub fn adopt(
    listener: std::os::unix::net::UnixListener,
    path: &Path,
) -> Result<UnixBinding, SinkError> {
    let fail = |e: io::Error| SinkError::SocketPath {
        path: path.to_path_buf(),
        reason: format!("cannot use the socket systemd passed: {e}"),
    };
    listener.set_nonblocking(true).map_err(fail)?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(fail)?;
    Ok(UnixBinding {
        listener,
        path: None,
    })
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Binds `path`, replacing a stale socket file and nothing else.
pub fn bind(path: &Path, mode: u32) -> Result<UnixBinding, SinkError> {
    let fail = |reason: String| SinkError::SocketPath {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A socket that accepts connections belongs to a running process: leave it.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(fail(
                    "another process is listening on it; stop that process or choose another path"
                        .into(),
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
        }
        Ok(meta) => {
            let what = if meta.is_dir() {
                "a directory"
            } else {
                "a file that is not a socket"
            };
            return Err(fail(format!("the path is {what}; it is left untouched: choose another path or remove it yourself")));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    // Bind under a temporary name, set the mode, then rename into place: no client can
    // connect while the permissions are still the umask's.
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = std::os::unix::net::UnixListener::bind(&staging).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            "; create the directory first (under systemd, RuntimeDirectory=wsbridge gives /run/wsbridge)"
        } else {
            ""
        };
        fail(format!("{e}{hint}"))
    })?;
    let placed = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(format!("cannot set mode {mode:o}: {e}")))
        .and_then(|()| {
            std::fs::rename(&staging, path)
                .map_err(|e| fail(format!("cannot move the socket into place: {e}")))
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(|e| fail(e.to_string()))?;
    Ok(UnixBinding {
        listener,
        path: Some(path.to_path_buf()),
    })
}
