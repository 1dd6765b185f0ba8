//! The pid file (`pid_file`, like Mosquitto's): written once the broker
//! runs, removed when it exits, so init scripts and monitoring can find it.

use std::path::{Path, PathBuf};

/// A written pid file; dropping it removes the file.
#[derive(Debug)]
pub struct PidFile(Option<PathBuf>);

impl PidFile {
    /// Writes this process's id to `path` (nothing when `None`).
    pub fn create(path: Option<&Path>) -> Result<PidFile, String> {
        let Some(path) = path else {
            return Ok(PidFile(None));
        };
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("pid_file {}: {e}", path.display()))?;
        Ok(PidFile(Some(path.to_path_buf())))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}
