//! A backup's files as a tar stream, written on a blocking thread into the response body.

use bytes::Bytes;
use std::io::Write;
use tokio::sync::mpsc::Sender;

/// Bytes sent to the body at a time.
const CHUNK_BYTES: usize = 256 * 1024;

/// Writes `taken`'s files, in order (the manifest last), as one tar archive into `body`; the
/// copy is removed afterwards. An error ends the body with it, so the client sees the archive
/// cut short (and `kopek backup` refuses it against the manifest).
pub fn stream_tar(taken: kopek_store::TakenBackup, body: Sender<std::io::Result<Bytes>>) {
    let writer = BodyWriter { body: body.clone(), buffer: Vec::with_capacity(CHUNK_BYTES) };
    let mut archive = tar::Builder::new(writer);
    let written = taken
        .files
        .iter()
        .try_for_each(|name| archive.append_path_with_name(taken.dir.join(name), name))
        .and_then(|()| archive.into_inner())
        .and_then(|mut writer| writer.flush());
    if let Err(error) = written {
        tracing::warn!(%error, "a backup's stream ended early");
        let _ = body.blocking_send(Err(error));
    }
}

struct BodyWriter {
    body: Sender<std::io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl Write for BodyWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk =
            Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES)));
        self.body.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}
