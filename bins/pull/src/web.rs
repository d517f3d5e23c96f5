//! The DICOMweb side of a pull: QIDO-RS (`GET {url}/studies?StudyDate=...`, paged with
//! `limit`/`offset`) to plan, WADO-RS (`GET {url}/studies/{uid}` as
//! `multipart/related; type="application/dicom"; transfer-syntax=*`, the objects as stored)
//! to fetch. The body is read as a stream; each part is ingested as soon as it is complete,
//! so memory holds one object at a time.

use crate::error::PullError;
use crate::job::{DateRange, PlannedStudy};
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use memchr::memmem::Finder;
use serde_json::Value;
use std::time::Duration;

/// Studies asked for per QIDO-RS page.
const PAGE: usize = 500;
/// Largest object accepted in one part (matches the largest DICOM object vna stores).
const MAX_PART: usize = 4095 << 20;
/// Objects of one study being ingested at once: durable ingests that overlap share their
/// catalog syncs (group commit); memory holds at most this many objects.
const INGESTS_IN_FLIGHT: usize = 4;

/// A DICOMweb source.
#[derive(Debug, Clone)]
pub struct WebSource {
    base: String,
    client: reqwest::Client,
    auth: Option<SourceAuth>,
}

/// How requests to a DICOMweb source authenticate.
#[derive(Debug, Clone)]
pub enum SourceAuth {
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
}

fn net(what: &str, e: impl std::fmt::Display) -> PullError {
    PullError::Network(format!("{what}: {e}"))
}

/// A request error with its causes (reqwest's own message hides them: "error sending request"
/// says nothing of an untrusted certificate or a refused connection).
fn request_failed(what: &str, e: reqwest::Error) -> PullError {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    PullError::Network(format!("{what}: {text}"))
}

impl WebSource {
    /// A source at `url` (the DICOMweb base, without a trailing slash); over https its
    /// certificate is verified against the system's CA store and the PEM certificates of
    /// `ca_file`, when given.
    pub fn new(
        url: &str,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
        auth: Option<SourceAuth>,
    ) -> Result<Self, PullError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .read_timeout(timeout)
            .tcp_nodelay(true)
            .https_only(url.starts_with("https://"));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| PullError::Remote(format!("reading CA file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| PullError::Remote(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(PullError::Remote(format!("CA file {} holds no PEM certificate", path.display())));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| PullError::Remote(format!("http client: {e}")))?;
        Ok(WebSource { base: url.trim_end_matches('/').to_string(), client, auth })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// A GET of `url` with the source's authentication.
    fn get(&self, url: String) -> reqwest::RequestBuilder {
        let rq = self.client.get(url);
        match &self.auth {
            Some(SourceAuth::Basic { username, password }) => rq.basic_auth(username, Some(password)),
            Some(SourceAuth::Bearer(token)) => rq.bearer_auth(token),
            None => rq,
        }
    }

    /// Every study with a StudyDate in `range` (every study when unbounded), with its
    /// Number of Study Related Instances, Patient ID and date. Pages until an empty page (a
    /// server may cap a page below the `limit` asked for); a study listed twice (the same UID
    /// under two patients) is listed once with the counts added.
    pub async fn find_studies(&self, range: &DateRange) -> Result<Vec<PlannedStudy>, PullError> {
        let mut studies: Vec<PlannedStudy> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut rows_seen = std::collections::HashSet::new();
        let mut offset = 0usize;
        loop {
            let mut query: Vec<(&str, String)> = vec![
                ("includefield", "00201208".into()),
                ("includefield", "00100020".into()),
                ("includefield", "00080020".into()),
                ("limit", PAGE.to_string()),
                ("offset", offset.to_string()),
            ];
            if let Some(d) = range.to_dicom() {
                query.push(("StudyDate", d));
            }
            let rsp = self
                .get(format!("{}/studies", self.base))
                .query(&query)
                .header(reqwest::header::ACCEPT, "application/dicom+json")
                .send()
                .await
                .map_err(|e| request_failed("QIDO-RS", e))?;
            let status = rsp.status();
            if status == reqwest::StatusCode::NO_CONTENT {
                break;
            }
            if !status.is_success() {
                let text = rsp.text().await.unwrap_or_default();
                return Err(http_error("QIDO-RS", status, &text));
            }
            let body: Value = rsp.json().await.map_err(|e| net("QIDO-RS answer", e))?;
            let Some(rows) = body.as_array() else {
                return Err(PullError::Remote("QIDO-RS answered something else than a JSON array".into()));
            };
            if rows.is_empty() {
                break;
            }
            let mut fresh = false;
            for row in rows {
                let uid = first_text(row, "0020000D");
                if uid.is_empty() {
                    continue;
                }
                let count = first_text(row, "00201208").parse().ok();
                if !rows_seen.insert((uid.clone(), first_text(row, "00100020"))) {
                    // The same row again: a server that ignores the offset.
                    continue;
                }
                fresh = true;
                match index.get(&uid) {
                    Some(&i) => {
                        let s = &mut studies[i];
                        s.remote_instances = match (s.remote_instances, count) {
                            (Some(x), Some(y)) => Some(x + y),
                            _ => None,
                        }
                    }
                    None => {
                        index.insert(uid.clone(), studies.len());
                        studies.push(PlannedStudy {
                            uid,
                            remote_instances: count,
                            patient_id: first_text(row, "00100020"),
                            study_date: first_text(row, "00080020"),
                        });
                    }
                }
            }
            if !fresh {
                break;
            }
            offset += rows.len();
        }
        Ok(studies)
    }

    /// Retrieves one study and hands each object to `each` as soon as it is complete, running
    /// up to four of the futures it returns at once (the next part is read meanwhile); returns
    /// the objects and bytes received once every future has ended, or the first error.
    pub async fn fetch_study<F, Fut>(&self, study: &str, mut each: F) -> Result<(u64, u64), PullError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<(), PullError>> + Send + 'static,
    {
        let mut in_flight = std::collections::VecDeque::new();
        let result = self.read_study(study, &mut each, &mut in_flight).await;
        // Every object handed out is finished with before the answer, whatever happened.
        let mut drained = Ok(());
        for task in in_flight {
            if let Err(e) = join(task).await {
                if drained.is_ok() {
                    drained = Err(e);
                }
            }
        }
        let (objects, bytes) = result?;
        drained.map(|_| (objects, bytes))
    }

    async fn read_study<F, Fut>(
        &self,
        study: &str,
        each: &mut F,
        in_flight: &mut std::collections::VecDeque<tokio::task::JoinHandle<Result<(), PullError>>>,
    ) -> Result<(u64, u64), PullError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<(), PullError>> + Send + 'static,
    {
        let rsp = self
            .get(format!("{}/studies/{study}", self.base))
            .header(reqwest::header::ACCEPT, "multipart/related; type=\"application/dicom\"; transfer-syntax=*")
            .send()
            .await
            .map_err(|e| request_failed("WADO-RS", e))?;
        let status = rsp.status();
        if !status.is_success() {
            let text = rsp.text().await.unwrap_or_default();
            return Err(http_error(&format!("WADO-RS of study {study}"), status, &text));
        }
        let content_type =
            rsp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let boundary = boundary_of(&content_type).ok_or_else(|| {
            PullError::Remote(format!("WADO-RS answered {content_type:?}, not multipart/related with a boundary"))
        })?;
        let mut parts = Multipart::new(&boundary);
        let mut body = rsp.bytes_stream();
        let (mut objects, mut bytes) = (0u64, 0u64);
        let mut ended = false;
        loop {
            match parts.next()? {
                Step::Part(headers, data) => {
                    let is_dicom = headers
                        .iter()
                        .find(|(k, _)| k == "content-type")
                        .is_none_or(|(_, v)| v.to_ascii_lowercase().starts_with("application/dicom"));
                    if !is_dicom {
                        continue;
                    }
                    objects += 1;
                    bytes += data.len() as u64;
                    if in_flight.len() >= INGESTS_IN_FLIGHT {
                        if let Some(task) = in_flight.pop_front() {
                            join(task).await?;
                        }
                    }
                    in_flight.push_back(tokio::spawn(each(data)));
                }
                Step::End => return Ok((objects, bytes)),
                Step::NeedMore if ended => {
                    return Err(net(&format!("WADO-RS of study {study}"), "the body ended before its closing boundary"))
                }
                Step::NeedMore => match body.next().await {
                    Some(Ok(chunk)) => parts.push(&chunk),
                    Some(Err(e)) => return Err(net(&format!("WADO-RS of study {study}"), e)),
                    None => ended = true,
                },
            }
        }
    }
}

async fn join(task: tokio::task::JoinHandle<Result<(), PullError>>) -> Result<(), PullError> {
    task.await.map_err(|e| PullError::Archive(format!("ingest task failed: {e}")))?
}

fn http_error(what: &str, status: reqwest::StatusCode, body: &str) -> PullError {
    let text: String = body.chars().take(200).collect();
    let message = format!("{what}: HTTP {status}: {}", text.trim());
    // Overload and gateway trouble pass; a 4xx or another 5xx will not change.
    if matches!(status.as_u16(), 429 | 502 | 503 | 504) {
        PullError::Network(message)
    } else {
        PullError::Remote(message)
    }
}

/// The first value of a DICOM JSON attribute as text (strings and numbers).
fn first_text(row: &Value, tag: &str) -> String {
    match &row[tag]["Value"][0] {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// The `boundary` parameter of a multipart content type.
fn boundary_of(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim().to_ascii_lowercase();
    if !media.starts_with("multipart/") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("boundary")).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Headers of a part, names lower-cased.
type PartHeaders = Vec<(String, String)>;

/// What the multipart reader has next.
#[derive(Debug, PartialEq)]
enum Step {
    /// A complete part: its headers and body.
    Part(PartHeaders, Bytes),
    /// More of the body is needed.
    NeedMore,
    /// The closing delimiter was read.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    AfterDelimiter,
    Body,
    Done,
}

/// A push-driven reader of `multipart/related` bodies (RFC 2046 §5.1) that hands out whole parts.
struct Multipart {
    buf: BytesMut,
    finder: Finder<'static>,
    delimiter_len: usize,
    state: State,
    /// How much of `buf` is known not to hold what is searched for.
    scanned: usize,
    headers: PartHeaders,
}

impl Multipart {
    fn new(boundary: &str) -> Self {
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        let mut buf = BytesMut::new();
        // The first delimiter may open the body without a line break before it.
        buf.extend_from_slice(b"\r\n");
        Multipart {
            buf,
            delimiter_len: delimiter.len(),
            finder: Finder::new(&delimiter).into_owned(),
            state: State::Preamble,
            scanned: 0,
            headers: Vec::new(),
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

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

    fn bad(what: &str) -> PullError {
        PullError::Remote(format!("malformed multipart body: {what}"))
    }

    fn next(&mut self) -> Result<Step, PullError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Preamble => match self.find_delimiter() {
                    Some(i) => {
                        self.buf.advance(i + self.delimiter_len);
                        self.scanned = 0;
                        self.state = State::AfterDelimiter;
                    }
                    None if self.buf.len() > 64 * 1024 => return Err(Self::bad("no boundary in the first 64 KiB")),
                    None => return Ok(Step::NeedMore),
                },
                State::AfterDelimiter => {
                    if self.buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &self.buf[..2] == b"--" {
                        self.state = State::Done;
                        continue;
                    }
                    let from = self.scanned.saturating_sub(3);
                    let Some(i) = memchr::memmem::find(&self.buf[from..], b"\r\n\r\n") else {
                        self.scanned = self.buf.len();
                        if self.buf.len() > 16 * 1024 {
                            return Err(Self::bad("part headers longer than 16 KiB"));
                        }
                        return Ok(Step::NeedMore);
                    };
                    let block = self.buf.split_to(from + i + 4);
                    self.scanned = 0;
                    let text = std::str::from_utf8(&block).map_err(|_| Self::bad("part headers are not text"))?;
                    let (_padding, lines) = text.split_once("\r\n").unwrap_or((text, ""));
                    self.headers = lines
                        .split("\r\n")
                        .filter(|l| !l.is_empty())
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    self.state = State::Body;
                }
                State::Body => match self.find_delimiter() {
                    Some(i) => {
                        let body = self.buf.split_to(i).freeze();
                        self.buf.advance(self.delimiter_len);
                        self.scanned = 0;
                        self.state = State::AfterDelimiter;
                        return Ok(Step::Part(std::mem::take(&mut self.headers), body));
                    }
                    None if self.buf.len() > MAX_PART => return Err(Self::bad("a part larger than 4 GiB")),
                    None => return Ok(Step::NeedMore),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(body: &[u8], boundary: &str, chunk: usize) -> Result<Vec<(PartHeaders, Vec<u8>)>, PullError> {
        let mut m = Multipart::new(boundary);
        let mut chunks = body.chunks(chunk);
        let mut out = Vec::new();
        loop {
            match m.next()? {
                Step::Part(h, b) => out.push((h, b.to_vec())),
                Step::End => return Ok(out),
                Step::NeedMore => match chunks.next() {
                    Some(c) => m.push(c),
                    None => return Err(PullError::Network("truncated".into())),
                },
            }
        }
    }

    #[test]
    fn multipart_at_any_chunking() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut body = b"preamble\r\n--XyZ\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--Xy\r\n\r\n--XyZ\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
        body.extend_from_slice(&big);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        for chunk in [1, 3, 7, 1000, 65_536, 1 << 20] {
            let p = parts(&body, "XyZ", chunk).unwrap();
            assert_eq!(p.len(), 2, "chunk {chunk}");
            assert_eq!(p[0].0, vec![("content-type".to_string(), "application/dicom".to_string())]);
            assert_eq!(p[0].1, b"first\r\n--Xy\r\n");
            assert!(p[1].1 == big, "chunk {chunk}");
        }
        assert!(parts(b"--b\r\n\r\nxx", "b", 2).is_err());
        assert!(parts(b"--b\r\n\r\nx\r\n--b--", "b", 2).unwrap()[0].0.is_empty());
    }

    #[test]
    fn boundaries_and_values() {
        assert_eq!(
            boundary_of("multipart/related; type=\"application/dicom\"; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary_of("multipart/related;boundary=xyz").as_deref(), Some("xyz"));
        assert_eq!(boundary_of("application/dicom"), None);
        let row: Value =
            serde_json::json!({"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "00201208": {"vr": "IS", "Value": [12]}});
        assert_eq!(first_text(&row, "0020000D"), "1.2.3");
        assert_eq!(first_text(&row, "00201208"), "12");
        assert_eq!(first_text(&row, "00100020"), "");
    }
}
