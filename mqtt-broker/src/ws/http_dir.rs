//! Static files for plain HTTP requests on a WebSocket listener
//! (`http_dir`, Mosquitto's key), so a dashboard and its broker share one
//! port. Only regular files inside the folder are served: `..` segments,
//! their percent-encoded forms and symbolic links that lead out are refused,
//! because every path is decoded first and the resolved file must still be
//! inside the folder's canonical path.

use std::io;
use std::path::{Path, PathBuf};

use super::handshake::Response;

/// A folder served over HTTP.
#[derive(Debug)]
pub(crate) struct HttpDir {
    /// Canonical (symlink-free, absolute) path of the folder.
    root: PathBuf,
}

/// A file to send.
#[derive(Debug)]
pub(crate) struct Found {
    pub path: PathBuf,
    pub len: u64,
    pub content_type: &'static str,
}

impl HttpDir {
    /// Checks that `dir` is a readable folder.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let root = dir.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(HttpDir { root })
    }

    /// The file a request target names, or the error response to send.
    pub async fn resolve(&self, target: &str) -> Result<Found, Response> {
        let path = target.split(['?', '#']).next().unwrap_or_default();
        if !path.starts_with('/') {
            return Err(bad_request());
        }
        let decoded = percent_decode(path).ok_or_else(bad_request)?;
        let mut rel = PathBuf::new();
        for seg in decoded.split('/') {
            match seg {
                "" | "." => {}
                ".." => return Err(forbidden()),
                // A backslash or NUL has no business in a URL path segment.
                s if s.contains(['\\', '\0']) => return Err(bad_request()),
                s => rel.push(s),
            }
        }
        let mut file = self.inside(&self.root.join(rel)).await?;
        let mut meta = tokio::fs::metadata(&file).await.map_err(|_| not_found())?;
        if meta.is_dir() {
            file = self.inside(&file.join("index.html")).await?;
            meta = tokio::fs::metadata(&file).await.map_err(|_| not_found())?;
        }
        if !meta.is_file() {
            return Err(not_found());
        }
        Ok(Found {
            content_type: content_type(&file),
            len: meta.len(),
            path: file,
        })
    }

    /// Resolves every symbolic link in `path` and requires the result to be
    /// inside the folder.
    async fn inside(&self, path: &Path) -> Result<PathBuf, Response> {
        let real = tokio::fs::canonicalize(path)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => forbidden(),
                _ => not_found(),
            })?;
        if real.starts_with(&self.root) {
            Ok(real)
        } else {
            Err(forbidden())
        }
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or text that is not
/// UTF-8 once decoded.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The Content-Type for a file name's extension.
pub(crate) fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn bad_request() -> Response {
    Response::text(400, "Bad Request", "Bad request path.\n")
}

fn forbidden() -> Response {
    Response::text(403, "Forbidden", "Forbidden.\n")
}

fn not_found() -> Response {
    Response::text(404, "Not Found", "Not found.\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("/a%20b/%2e%2E").as_deref(), Some("/a b/.."));
        assert_eq!(percent_decode("/%zz"), None);
        assert_eq!(percent_decode("/%2"), None);
        assert_eq!(percent_decode("/%ff"), None);
    }

    #[test]
    fn content_types_follow_extensions() {
        assert_eq!(
            content_type(Path::new("index.HTML")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("mqtt.min.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("blob")), "application/octet-stream");
    }
}
