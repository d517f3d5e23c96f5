//! A streaming reader of `multipart/related` bodies (RFC 2046 §5.1, RFC 2387).
//!
//! Parts are handed out as header lists followed by body chunks, so that a 2 GB upload
//! never sits in memory: the caller decides where each chunk goes. Header blocks and the
//! preamble are bounded; a body that ends before its closing delimiter is an error.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use memchr::memmem::Finder;

/// Longest header block of one part.
const MAX_HEADERS: usize = 16 * 1024;
/// Longest preamble before the first delimiter.
const MAX_PREAMBLE: usize = 64 * 1024;
/// Body chunks are handed out once at least this many bytes are known not to hold a delimiter.
const CHUNK: usize = 256 * 1024;

/// Why a body is not a well-formed multipart body.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    /// The body ended before the closing delimiter.
    #[error("the multipart body ended before its closing boundary")]
    Truncated,
    /// No delimiter line was found where the body should start.
    #[error("the body does not start with the boundary given in Content-Type")]
    NoBoundary,
    /// A part's header block is malformed.
    #[error("malformed part headers: {0}")]
    BadHeaders(String),
    /// The transport failed while reading the body.
    #[error("reading the request body failed: {0}")]
    Body(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    AfterDelimiter,
    Body,
    Done,
}

/// Reads parts from a body stream.
pub struct MultipartReader<S> {
    stream: S,
    buf: BytesMut,
    finder: Finder<'static>,
    delimiter_len: usize,
    state: State,
    eof: bool,
    /// How much of `buf` is known to hold no match of what is being searched for, so that a
    /// body arriving in tiny chunks is not searched again from the start each time.
    scanned: usize,
}

/// Headers of one part, names lower-cased.
pub type PartHeaders = Vec<(String, String)>;

impl<S, E> MultipartReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    /// A reader for parts separated by `boundary`.
    pub fn new(stream: S, boundary: &str) -> Self {
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        let mut buf = BytesMut::with_capacity(CHUNK * 2);
        // The first delimiter may open the body without a preceding line break.
        buf.extend_from_slice(b"\r\n");
        Self {
            stream,
            buf,
            delimiter_len: delimiter.len(),
            finder: Finder::new(&delimiter).into_owned(),
            state: State::Preamble,
            eof: false,
            scanned: 0,
        }
    }

    /// Reads more of the body; `false` when it has ended.
    async fn fill(&mut self) -> Result<bool, MultipartError> {
        if self.eof {
            return Ok(false);
        }
        match self.stream.next().await {
            Some(Ok(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(MultipartError::Body(e.to_string())),
            None => {
                self.eof = true;
                Ok(false)
            }
        }
    }

    /// The offset of the next delimiter in `buf`, searching only what was not searched yet;
    /// on a miss, remembers where a delimiter could still begin.
    fn find_delimiter(&mut self) -> Option<usize> {
        let from = self.scanned.min(self.buf.len());
        match self.finder.find(&self.buf[from..]) {
            Some(i) => Some(from + i),
            None => {
                self.scanned = self.buf.len().saturating_sub(self.delimiter_len - 1);
                None
            }
        }
    }

    /// The headers of the next part, or `None` after the closing delimiter.
    /// Any unread body of the current part is skipped.
    pub async fn next_part(&mut self) -> Result<Option<PartHeaders>, MultipartError> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Body => while self.next_chunk().await?.is_some() {},
                State::Preamble => {
                    if let Some(i) = self.find_delimiter() {
                        self.buf.advance(i + self.delimiter_len);
                        self.scanned = 0;
                        self.state = State::AfterDelimiter;
                        continue;
                    }
                    if self.buf.len() > MAX_PREAMBLE {
                        return Err(MultipartError::NoBoundary);
                    }
                    if !self.fill().await? {
                        return Err(MultipartError::NoBoundary);
                    }
                }
                State::AfterDelimiter => return self.read_headers().await,
            }
        }
    }

    /// After a delimiter: the closing `--`, or optional padding, CRLF and a header block.
    async fn read_headers(&mut self) -> Result<Option<PartHeaders>, MultipartError> {
        while self.buf.len() < 2 {
            if !self.fill().await? {
                return Err(MultipartError::Truncated);
            }
        }
        if &self.buf[..2] == b"--" {
            self.state = State::Done;
            return Ok(None);
        }
        let end = loop {
            let from = self.scanned.saturating_sub(3);
            if let Some(i) = memchr::memmem::find(&self.buf[from..], b"\r\n\r\n") {
                break from + i;
            }
            self.scanned = self.buf.len();
            // A part without headers: the delimiter line's CRLF is followed by the empty line.
            if self.buf.len() > MAX_HEADERS {
                return Err(MultipartError::BadHeaders("header block longer than 16 KiB".into()));
            }
            if !self.fill().await? {
                return Err(MultipartError::Truncated);
            }
        };
        let block = self.buf.split_to(end + 4);
        self.scanned = 0;
        let text = std::str::from_utf8(&block).map_err(|_| MultipartError::BadHeaders("not ASCII text".into()))?;
        let (padding, lines) = text.split_once("\r\n").unwrap_or((text, ""));
        if !padding.chars().all(|c| c == ' ' || c == '\t') {
            return Err(MultipartError::BadHeaders("text after the boundary on the delimiter line".into()));
        }
        let mut headers = Vec::new();
        for line in lines.trim_end_matches("\r\n").split("\r\n").filter(|l| !l.is_empty()) {
            let (name, value) =
                line.split_once(':').ok_or_else(|| MultipartError::BadHeaders(format!("header line {line:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        self.state = State::Body;
        Ok(Some(headers))
    }

    /// The next chunk of the current part's body, or `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, MultipartError> {
        if self.state != State::Body {
            return Ok(None);
        }
        loop {
            if let Some(i) = self.find_delimiter() {
                self.scanned = 0;
                if i > 0 {
                    return Ok(Some(self.buf.split_to(i).freeze()));
                }
                self.buf.advance(self.delimiter_len);
                self.state = State::AfterDelimiter;
                return Ok(None);
            }
            // Everything but a possible partial delimiter at the end is body.
            let safe = self.buf.len().saturating_sub(self.delimiter_len - 1);
            if safe >= CHUNK {
                self.scanned = 0;
                return Ok(Some(self.buf.split_to(safe).freeze()));
            }
            if !self.fill().await? {
                return Err(MultipartError::Truncated);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(
        body: &[u8],
        boundary: &str,
        chunk: usize,
    ) -> Result<Vec<(PartHeaders, Vec<u8>)>, MultipartError> {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            body.chunks(chunk.max(1)).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let mut r = MultipartReader::new(futures::stream::iter(chunks), boundary);
        let mut parts = Vec::new();
        while let Some(h) = r.next_part().await? {
            let mut data = Vec::new();
            while let Some(c) = r.next_chunk().await? {
                data.extend_from_slice(&c);
            }
            parts.push((h, data));
        }
        Ok(parts)
    }

    #[tokio::test]
    async fn reads_parts_at_any_chunking() {
        let body = b"preamble\r\n--XyZ\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--Xy\r\n\r\n--XyZ  \r\ncontent-type:a/b\r\n\r\nsecond\r\n--XyZ--\r\nepilogue";
        for chunk in [1, 2, 3, 7, 64, 1000] {
            let parts = read_all(body, "XyZ", chunk).await.unwrap();
            assert_eq!(parts.len(), 2, "chunk {chunk}");
            assert_eq!(parts[0].0, vec![("content-type".to_string(), "application/dicom".to_string())]);
            assert_eq!(parts[0].1, b"first\r\n--Xy\r\n");
            assert_eq!(parts[1].1, b"second");
        }
    }

    #[tokio::test]
    async fn large_parts_in_small_chunks() {
        let part: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let mut body = b"--bnd\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
        body.extend_from_slice(&part);
        body.extend_from_slice(b"\r\n--bnd\r\n\r\nz\r\n--bnd--");
        for chunk in [7, 1000, 65_536] {
            let parts = read_all(&body, "bnd", chunk).await.unwrap();
            assert_eq!(parts.len(), 2, "chunk {chunk}");
            assert!(parts[0].1 == part, "chunk {chunk}");
            assert_eq!(parts[1].1, b"z");
        }
    }

    #[tokio::test]
    async fn body_may_start_with_the_delimiter_and_parts_may_lack_headers() {
        let parts = read_all(b"--b\r\n\r\nx\r\n--b--", "b", 3).await.unwrap();
        assert_eq!(parts.len(), 1);
        assert!(parts[0].0.is_empty());
        assert_eq!(parts[0].1, b"x");
    }

    #[tokio::test]
    async fn broken_bodies_are_errors() {
        assert!(matches!(read_all(b"--b\r\n\r\nxxxx", "b", 2).await, Err(MultipartError::Truncated)));
        assert!(matches!(read_all(b"no boundary here", "b", 4).await, Err(MultipartError::NoBoundary)));
        assert!(matches!(
            read_all(b"--b\r\nbad header\r\n\r\nx\r\n--b--", "b", 4).await,
            Err(MultipartError::BadHeaders(_))
        ));
        assert!(matches!(read_all(b"--b\r\n\r\nx\r\n--b", "b", 4).await, Err(MultipartError::Truncated)));
        assert!(matches!(read_all(b"", "b", 4).await, Err(MultipartError::NoBoundary)));
    }
}
