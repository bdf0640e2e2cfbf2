//! Reading a command's output: stdout, stderr and the progress pipe, read
//! together as lines. What a line means is `session`'s business.
//!
//! Hand-written rather than taken from a crate: the line reader (lines
//! split on `\n` and `\r`, each capped, so a line without end cannot grow
//! memory).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe::Receiver;
use tokio::process::{ChildStderr, ChildStdout};

/// Lines longer than this are cut; the rest up to the line's end is dropped.
/// Large enough for a protocol line carrying a sizeable `result`.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Which pipe a line came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Source {
    Stdout,
    Stderr,
    ProgressFd,
}

/// A line as read: its bytes without the line end, and whether it was cut
/// at [`MAX_LINE_BYTES`].
#[derive(Debug, PartialEq)]
pub(super) struct Line {
    pub(super) bytes: Vec<u8>,
    pub(super) truncated: bool,
}

/// Reads lines split on `\n` and `\r`, skipping empty ones. Memory stays
/// bounded: a line longer than [`MAX_LINE_BYTES`] is returned cut, and the
/// rest of it is read and dropped.
struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    chunk: Box<[u8]>,
    /// Dropping the rest of a line that was returned cut.
    discarding: bool,
    eof: bool,
    done: bool,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    fn new(reader: R) -> Self {
        Lines {
            reader,
            buf: Vec::new(),
            chunk: vec![0; 8192].into_boxed_slice(),
            discarding: false,
            eof: false,
            done: false,
        }
    }

    /// The next line, or None at the end. Cancel-safe: the only await is a
    /// read, and what it read is stored before the next one.
    async fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
                let mut bytes: Vec<u8> = self.buf.drain(..=end).collect();
                bytes.pop();
                if std::mem::take(&mut self.discarding) || bytes.is_empty() {
                    continue;
                }
                return Ok(Some(Line {
                    bytes,
                    truncated: false,
                }));
            }
            if self.discarding {
                self.buf.clear();
            } else if self.buf.len() >= MAX_LINE_BYTES {
                let bytes = self.buf.drain(..MAX_LINE_BYTES).collect();
                self.discarding = true;
                return Ok(Some(Line { bytes, truncated: true }));
            }
            if self.eof {
                self.done = true;
                if self.discarding || self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Line {
                    bytes: std::mem::take(&mut self.buf),
                    truncated: false,
                }));
            }
            match self.reader.read(&mut self.chunk).await {
                Ok(0) => self.eof = true,
                Ok(read) => self.buf.extend_from_slice(&self.chunk[..read]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.done = true;
                    return Err(error);
                }
            }
        }
    }
}

/// The child's output pipes, read together.
pub(super) struct Outputs {
    stdout: Lines<ChildStdout>,
    stderr: Lines<ChildStderr>,
    fd: Option<Lines<Receiver>>,
}

impl Outputs {
    pub(super) fn new(stdout: ChildStdout, stderr: ChildStderr, fd: Option<Receiver>) -> Self {
        Outputs {
            stdout: Lines::new(stdout),
            stderr: Lines::new(stderr),
            fd: fd.map(Lines::new),
        }
    }

    pub(super) fn all_done(&self) -> bool {
        self.stdout.done && self.stderr.done && self.fd.as_ref().is_none_or(|fd| fd.done)
    }

    /// The next line from any pipe, or None once every pipe has ended.
    /// Cancel-safe, as each reader is.
    pub(super) async fn next(&mut self) -> Option<(Source, Line)> {
        loop {
            let fd_open = self.fd.as_ref().is_some_and(|fd| !fd.done);
            let (source, read) = tokio::select! {
                read = self.stdout.next_line(), if !self.stdout.done => (Source::Stdout, read),
                read = self.stderr.next_line(), if !self.stderr.done => (Source::Stderr, read),
                read = async { self.fd.as_mut().expect("guarded by fd_open").next_line().await }, if fd_open => {
                    (Source::ProgressFd, read)
                }
                else => return None,
            };
            match read {
                Ok(Some(line)) => return Some((source, line)),
                Ok(None) => {}
                Err(error) => tracing::warn!(?source, %error, "cannot read the command's output"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_split_on_both_line_ends_and_stay_bounded() {
        let mut input = b"one\r\ntwo\rthree\n\n".to_vec();
        input.extend(vec![b'x'; MAX_LINE_BYTES * 3]);
        input.extend(b"\nlast");
        let mut lines = Lines::new(input.as_slice());
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            assert!(lines.buf.capacity() <= MAX_LINE_BYTES * 2, "the buffer stays bounded");
            seen.push((
                line.bytes.len(),
                line.truncated,
                String::from_utf8_lossy(&line.bytes[..line.bytes.len().min(5)]).into_owned(),
            ));
        }
        assert_eq!(
            seen,
            [
                (3, false, "one".to_owned()),
                (3, false, "two".to_owned()),
                (5, false, "three".to_owned()),
                (MAX_LINE_BYTES, true, "xxxxx".to_owned()),
                (4, false, "last".to_owned()),
            ]
        );
    }
}
