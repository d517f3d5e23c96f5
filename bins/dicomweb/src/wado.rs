//! WADO-RS (PS3.18 §10.4): studies, series and instances as `multipart/related` streams of
//! the stored objects, `/metadata` from the catalog, `/frames` and `/bulkdata`.
//!
//! Objects go out as stored (`transfer-syntax=*`, or no transfer-syntax parameter); a named
//! syntax is served when the stored one is the same or both are uncompressed, else 406.
//! A retrieval whose objects need a recall from cold storage answers 202 with a Warning
//! instead of holding a worker.

use crate::error::ApiError;
use crate::media::{parse_accept, MediaType};
use crate::AppState;
use archive_core::archive::Readiness;
use archive_core::model::InstanceRecord;
use archive_core::parse::{parse_part10, walked_dataset};
use archive_core::pixels::{frame_layout, FrameLayout, PixelError};
use archive_core::transcode::{can_convert, transcode_part10};
use archive_core::uid::TransferSyntaxUid;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;

/// What a retrieval addresses: the core's retrieve target (study, series, or instance of a
/// series of a study), which the core's one retrieve selection turns into instances.
pub use archive_core::retrieve::RetrieveTarget as Target;

/// The syntax a client wants objects in.
#[derive(Debug, Clone, PartialEq)]
pub enum Wanted {
    /// As stored.
    AsStored,
    /// A named transfer syntax.
    Syntax(TransferSyntaxUid),
}

impl Wanted {
    fn possible_for(&self, record: &InstanceRecord) -> bool {
        match self {
            Wanted::AsStored => true,
            Wanted::Syntax(ts) => can_convert(record.transfer_syntax.as_str(), ts.as_str()),
        }
    }
}

/// How the objects go out.
#[derive(Debug, Clone, PartialEq)]
enum Delivery {
    /// `multipart/related; type="application/dicom"`.
    Multipart(Wanted),
    /// A bare `application/dicom` body (single instances only).
    Single(Wanted),
}

/// The visible instance records a target names, from the core's retrieve selection (which
/// leaves out what deletions hide); 404 when there are none.
pub async fn records(state: &AppState, target: &Target) -> Result<Vec<InstanceRecord>, ApiError> {
    let found = state.archive.retrieve().select_async(target.query(), state.archive.match_options()).await?;
    if found.is_empty() {
        return Err(archive_core::retrieve::RetrieveError::NotFound(target.to_string()).into());
    }
    Ok(found)
}

fn wanted_of(m: &MediaType) -> Result<Wanted, ApiError> {
    match m.param("transfer-syntax") {
        None | Some("*") => Ok(Wanted::AsStored),
        Some(uid) => TransferSyntaxUid::new(uid)
            .map(Wanted::Syntax)
            .map_err(|e| ApiError::bad_request(format!("transfer-syntax {uid:?} is not a UID: {e}"))),
    }
}

/// The deliveries the Accept header allows, best first.
fn dicom_deliveries(headers: &HeaderMap, single_allowed: bool) -> Result<Vec<Delivery>, ApiError> {
    let mut out = Vec::new();
    for m in parse_accept(headers.get(header::ACCEPT).and_then(|h| h.to_str().ok())) {
        match m.essence.as_str() {
            "*/*" | "multipart/*" => out.push(Delivery::Multipart(Wanted::AsStored)),
            "multipart/related" if m.param("type").is_none_or(|t| t.eq_ignore_ascii_case("application/dicom")) => {
                out.push(Delivery::Multipart(wanted_of(&m)?));
            }
            "application/dicom" => {
                let w = wanted_of(&m)?;
                out.push(if single_allowed { Delivery::Single(w) } else { Delivery::Multipart(w) });
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(ApiError::not_acceptable(
            "instances are served as multipart/related; type=\"application/dicom\" (or application/dicom for one instance)",
        ));
    }
    Ok(out)
}

/// A random multipart boundary.
pub fn boundary() -> String {
    format!("vna-{:032x}", rand::random::<u128>())
}

/// What [`ensure_online`] found.
enum Online {
    /// Every object can be read now: the records as they are now.
    Ready(Vec<InstanceRecord>),
    /// A recall still runs: the 202 answer to send (with a Warning and Retry-After).
    Recalling(Response),
}

/// Brings objects with no online copy back to the recall tier, waiting up to
/// `lifecycle.http_recall_wait_secs`: the records as they are now, or a 202 answer when the
/// recall is still running then.
async fn ensure_online(state: &AppState, records: Vec<InstanceRecord>) -> Result<Online, ApiError> {
    let wait = std::time::Duration::from_secs(state.archive.config().lifecycle.http_recall_wait_secs);
    match state.archive.recall_offline(records, wait).await? {
        Readiness::Online(records) => Ok(Online::Ready(records)),
        Readiness::Recalling(job) => {
            let message = format!("the study is being recalled from cold storage (job {job}); retry later");
            let mut rsp =
                (StatusCode::ACCEPTED, crate::error::error_body(StatusCode::ACCEPTED, &message)).into_response();
            let h = rsp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            if let Ok(v) = HeaderValue::from_str(&format!("299 vna \"{message}\"")) {
                h.insert(header::WARNING, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("/api/jobs/{job}")) {
                h.insert(header::LOCATION, v);
            }
            Ok(Online::Recalling(rsp))
        }
    }
}

/// WADO-RS retrieval of a study, series or instance.
pub async fn retrieve(state: AppState, target: Target, headers: HeaderMap) -> Result<Response, ApiError> {
    let single_allowed = matches!(target, Target::Instance(..));
    let deliveries = dicom_deliveries(&headers, single_allowed)?;
    let records = records(&state, &target).await?;
    let delivery = deliveries
        .into_iter()
        .find(|d| {
            let (Delivery::Multipart(w) | Delivery::Single(w)) = d;
            records.iter().all(|r| w.possible_for(r))
        })
        .ok_or_else(|| {
            ApiError::not_acceptable(
                "the objects cannot be delivered in the transfer syntax asked for: vna converts to uncompressed syntaxes (decoding JPEG, JPEG 2000 and RLE), never compresses; ask transfer-syntax=* for the stored syntax",
            )
        })?;
    let records = match ensure_online(&state, records).await? {
        Online::Ready(records) => records,
        Online::Recalling(accepted) => return Ok(accepted),
    };
    state.archive.audit_retrieve("WADO-RS", &crate::peer_of(&headers), &records, "WADO-RS retrieve");
    match delivery {
        Delivery::Single(wanted) => {
            let record = records.into_iter().next().expect("records() never returns none");
            let (ts, body) = object_body(&state, record, &wanted).await?;
            let mut rsp = Response::new(body);
            let ct = format!("application/dicom; transfer-syntax={ts}");
            rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(&ct).expect("uids are ascii"));
            Ok(rsp)
        }
        Delivery::Multipart(wanted) => Ok(multipart_objects(state, records, wanted)),
    }
}

/// One object's body in the wanted syntax: streamed as stored, or converted in memory.
async fn object_body(state: &AppState, record: InstanceRecord, wanted: &Wanted) -> Result<(String, Body), ApiError> {
    let retrieve = state.archive.retrieve();
    match wanted {
        Wanted::Syntax(ts) if ts != &record.transfer_syntax => {
            let (record, bytes) = retrieve.read(record).await?;
            // Decoding is CPU work: off the async workers. A decoder that cannot handle this
            // object means the syntax cannot be given: 406.
            let target = ts.clone();
            let out = tokio::task::spawn_blocking(move || {
                transcode_part10(&bytes, record.transfer_syntax.as_str(), &target, &record.sop_class, &record.uid)
                    .map_err(|e| {
                        ApiError::not_acceptable(format!("instance {} cannot be given in {target}: {e}", record.uid))
                    })
            })
            .await??;
            Ok((ts.to_string(), Body::from(out)))
        }
        _ => {
            let obj = retrieve.open(record).await?;
            let ts = obj.record.transfer_syntax.to_string();
            Ok((ts, Body::from_stream(obj.body.map(|r| r.map_err(std::io::Error::other)))))
        }
    }
}

/// Streams objects as one multipart body; a failure after the head aborts the stream.
fn multipart_objects(state: AppState, records: Vec<InstanceRecord>, wanted: Wanted) -> Response {
    let boundary = boundary();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let b = boundary.clone();
    tokio::spawn(async move {
        for record in records {
            let uid = record.uid.clone();
            let (ts, body) = match object_body(&state, record, &wanted).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(sop_instance = %uid, error = %e, "retrieval aborted");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let head = format!("\r\n--{b}\r\nContent-Type: application/dicom; transfer-syntax={ts}\r\n\r\n");
            if tx.send(Ok(Bytes::from(head))).await.is_err() {
                return; // the client went away
            }
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let item = chunk.map_err(|e| std::io::Error::other(e.to_string()));
                let failed = item.is_err();
                if failed {
                    tracing::error!(sop_instance = %uid, "retrieval aborted: object read failed");
                }
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        }
        let _ = tx.send(Ok(Bytes::from(format!("\r\n--{b}--\r\n")))).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut rsp = Response::new(Body::from_stream(stream));
    let ct = format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(&ct).expect("ascii"));
    rsp
}

/// WADO-RS metadata of a study, series or instance, from the catalog.
pub async fn metadata(state: AppState, target: Target, headers: HeaderMap) -> Result<Response, ApiError> {
    let accept = parse_accept(headers.get(header::ACCEPT).and_then(|h| h.to_str().ok()));
    if !accept.iter().any(|m| m.covers("application/dicom+json") || m.essence == "application/json") {
        return Err(ApiError::not_acceptable("metadata is available as application/dicom+json only"));
    }
    let records = records(&state, &target).await?;
    let stored = state.archive.retrieve().metadata(&records).await?;
    let base = state.base_url(&headers);
    let mut body = Vec::with_capacity(stored.iter().map(Vec::len).sum::<usize>() + stored.len() + 2);
    body.push(b'[');
    for (i, json) in stored.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&archive_core::metadata::absolutize(json, &base));
    }
    body.push(b']');
    let mut rsp = Response::new(Body::from(body));
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/dicom+json"));
    Ok(rsp)
}

/// The media type of frames in a transfer syntax.
fn frame_media_type(ts: &str, native: bool) -> &'static str {
    if native {
        return "application/octet-stream";
    }
    match ts {
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" | "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70" => {
            "image/jpeg"
        }
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => "image/jphc",
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" => "video/mpeg",
        "1.2.840.10008.1.2.4.102" | "1.2.840.10008.1.2.4.103" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// Whether an Accept header allows parts of `media` (in a multipart body, or alone when `single`).
fn accepts_parts(headers: &HeaderMap, media: &str) -> Option<bool> {
    for m in parse_accept(headers.get(header::ACCEPT).and_then(|h| h.to_str().ok())) {
        match m.essence.as_str() {
            "*/*" | "multipart/*" => return Some(false),
            "multipart/related"
                if m.param("type").is_none_or(|t| parse_media_range(t).is_some_and(|r| r.covers(media))) =>
            {
                return Some(false);
            }
            "multipart/related" => {}
            other if m.covers(media) && other != "multipart/related" => return Some(true),
            _ => {}
        }
    }
    None
}

fn parse_media_range(t: &str) -> Option<MediaType> {
    crate::media::parse_one(t)
}

/// Reads and parses an instance for frame or bulk data access.
async fn read_parsed(
    state: &AppState,
    target: Target,
) -> Result<(InstanceRecord, Bytes, archive_core::parse::ParsedObject), ApiError> {
    let found = records(state, &target).await?;
    let record = match ensure_online(state, found).await? {
        Online::Ready(mut records) => records.remove(0),
        Online::Recalling(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the instance is being recalled from cold storage; retry later",
            ))
        }
    };
    let (record, bytes) = state.archive.retrieve().read(record).await?;
    let parsed = parse_part10(&bytes).map_err(|e| ApiError::internal(format!("stored object unreadable: {e}")))?;
    Ok((record, bytes, parsed))
}

fn pixel_error(e: PixelError) -> ApiError {
    match e {
        PixelError::NoPixelData => ApiError::not_found("the instance has no pixel data"),
        other => ApiError::new(StatusCode::CONFLICT, other.to_string()),
    }
}

/// Parses a frame list (`1,3,5`): 1-based, distinct (so that the answer is never larger
/// than the object), at most 10,000 numbers.
pub fn parse_frame_list(list: &str) -> Result<Vec<usize>, ApiError> {
    let numbers: Result<Vec<usize>, _> = list.split(',').map(|n| n.trim().parse::<usize>()).collect();
    match numbers {
        Ok(n) if !n.is_empty() && n.len() <= 10_000 && n.iter().all(|f| *f >= 1) => {
            let distinct: std::collections::HashSet<usize> = n.iter().copied().collect();
            if distinct.len() != n.len() {
                return Err(ApiError::bad_request(format!("{list:?} names a frame more than once")));
            }
            Ok(n)
        }
        _ => Err(ApiError::bad_request(format!("{list:?} is not a list of frame numbers (1, 2, ...)"))),
    }
}

fn parts_response(parts: Vec<Vec<u8>>, media: &str, ts: Option<&str>, single: bool) -> Response {
    if single && parts.len() == 1 {
        let mut rsp = Response::new(Body::from(parts.into_iter().next().expect("one part")));
        rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(media).expect("ascii"));
        return rsp;
    }
    let boundary = boundary();
    let part_type = match ts {
        Some(ts) => format!("{media}; transfer-syntax={ts}"),
        None => media.to_string(),
    };
    let mut body = Vec::with_capacity(parts.iter().map(Vec::len).sum::<usize>() + parts.len() * 128);
    for p in parts {
        body.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Type: {part_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(&p);
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut rsp = Response::new(Body::from(body));
    let ct = format!("multipart/related; type=\"{media}\"; boundary={boundary}");
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(&ct).expect("ascii"));
    rsp
}

/// WADO-RS frames of an instance.
pub async fn frames(state: AppState, target: Target, list: String, headers: HeaderMap) -> Result<Response, ApiError> {
    let numbers = parse_frame_list(&list)?;
    let (record, bytes, parsed) = read_parsed(&state, target).await?;
    let data = walked_dataset(&bytes, &parsed).map_err(|e| ApiError::internal(e.to_string()))?;
    let layout = frame_layout(&data, &parsed).map_err(pixel_error)?;
    let native = matches!(layout, FrameLayout::Native { .. });
    let ts = record.transfer_syntax.as_str();
    let media = frame_media_type(ts, native);
    let Some(single) = accepts_parts(&headers, media) else {
        return Err(ApiError::not_acceptable(format!(
            "frames of this instance are available as {media} (stored in {ts}); vna does not decompress them"
        )));
    };
    let mut parts = Vec::with_capacity(numbers.len());
    for n in numbers {
        let frame = layout.frame(&data, n - 1).ok_or_else(|| {
            ApiError::not_found(format!("frame {n} does not exist: the instance has {} frames", layout.len()))
        })?;
        parts.push(frame);
    }
    Ok(parts_response(parts, media, (!native).then_some(ts), single))
}

/// WADO-RS bulk data of an instance: `7FE00010` or a path of sequence tags and item indexes.
pub async fn bulkdata(state: AppState, target: Target, path: String, headers: HeaderMap) -> Result<Response, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let valid = !segments.is_empty()
        && segments.len() % 2 == 1
        && segments.iter().enumerate().all(|(i, s)| {
            if i % 2 == 0 {
                s.len() == 8 && s.chars().all(|c| c.is_ascii_hexdigit())
            } else {
                s.len() <= 6 && s.chars().all(|c| c.is_ascii_digit())
            }
        });
    if !valid {
        return Err(ApiError::bad_request(format!("{path:?} is not a bulk data path (tag or tag/item/tag...)")));
    }
    let (record, bytes, parsed) = read_parsed(&state, target).await?;
    let data = walked_dataset(&bytes, &parsed).map_err(|e| ApiError::internal(e.to_string()))?;
    let ts = record.transfer_syntax.as_str();
    let (value, media, part_ts) = if segments == ["7FE00010"] || segments == ["7fe00010"] {
        let layout = frame_layout(&data, &parsed).map_err(pixel_error)?;
        let native = matches!(layout, FrameLayout::Native { .. });
        let mut all = Vec::new();
        for i in 0..layout.len() {
            all.extend(layout.frame(&data, i).unwrap_or_default());
        }
        (all, frame_media_type(ts, native), (!native).then_some(ts))
    } else {
        (nested_value(&data, &parsed, &segments)?, "application/octet-stream", None)
    };
    // Compressed pixel data asked for as octet-stream goes out as such, labelled with its
    // transfer syntax (the bytes are the frames' compressed bitstreams).
    let (media, single) = match accepts_parts(&headers, media) {
        Some(single) => (media, single),
        None => match (part_ts, accepts_parts(&headers, "application/octet-stream")) {
            (Some(_), Some(single)) => ("application/octet-stream", single),
            _ => return Err(ApiError::not_acceptable(format!("this bulk data is available as {media}"))),
        },
    };
    Ok(parts_response(vec![value], media, part_ts, single))
}

/// The value bytes of an element named by a bulk data path (decodes the data set).
fn nested_value(
    data: &[u8],
    parsed: &archive_core::parse::ParsedObject,
    segments: &[&str],
) -> Result<Vec<u8>, ApiError> {
    use dicom_core::value::Value;
    use dicom_core::Tag;
    use dicom_encoding::TransferSyntaxIndex;
    let (explicit, be) = archive_core::parse::encoding_of(parsed.transfer_syntax.as_str());
    let read_as = match (explicit, be) {
        (false, _) => "1.2.840.10008.1.2",
        (true, true) => "1.2.840.10008.1.2.2",
        (true, false) => "1.2.840.10008.1.2.1",
    };
    let ts =
        dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(read_as).expect("native syntaxes are registered");
    let head = &data[..parsed.pixel_data.as_ref().map_or(data.len(), |p| p.start)];
    let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(head, ts)
        .map_err(|e| ApiError::internal(format!("stored object unreadable: {e}")))?;
    let tag_of = |s: &str| {
        let g = u16::from_str_radix(&s[..4], 16).unwrap_or(0);
        let e = u16::from_str_radix(&s[4..], 16).unwrap_or(0);
        Tag(g, e)
    };
    let missing = || ApiError::not_found(format!("no bulk data at {}", segments.join("/")));
    let mut current = &obj;
    let mut i = 0;
    loop {
        let el = current.element(tag_of(segments[i])).map_err(|_| missing())?;
        if i == segments.len() - 1 {
            return match el.value() {
                Value::Primitive(p) => Ok(p.to_bytes().into_owned()),
                Value::PixelSequence(ps) => Ok(ps.fragments().iter().flat_map(|f| f.iter().copied()).collect()),
                Value::Sequence(_) => Err(ApiError::bad_request("the path names a sequence, not bulk data")),
            };
        }
        let index: usize = segments[i + 1].parse().map_err(|_| missing())?;
        current = el.items().and_then(|items| items.get(index)).ok_or_else(missing)?;
        i += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        h
    }

    #[test]
    fn negotiation_of_dicom_deliveries() {
        let d = dicom_deliveries(&headers(r#"multipart/related; type="application/dicom"; transfer-syntax=*"#), false);
        assert_eq!(d.unwrap(), vec![Delivery::Multipart(Wanted::AsStored)]);
        let d = dicom_deliveries(&headers("application/dicom; transfer-syntax=1.2.840.10008.1.2.1"), true).unwrap();
        assert!(matches!(&d[0], Delivery::Single(Wanted::Syntax(t)) if t.as_str() == "1.2.840.10008.1.2.1"));
        assert_eq!(dicom_deliveries(&headers("image/png"), true).unwrap_err().status, StatusCode::NOT_ACCEPTABLE);
        assert_eq!(
            dicom_deliveries(&headers("application/dicom; transfer-syntax=../../x"), true).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(dicom_deliveries(&HeaderMap::new(), false).unwrap(), vec![Delivery::Multipart(Wanted::AsStored)]);
    }

    #[test]
    fn frame_lists() {
        assert_eq!(parse_frame_list("1,3, 2").unwrap(), vec![1, 3, 2]);
        for bad in ["", "0", "1,,2", "a", "-1", "1.5", "1,2,1"] {
            assert!(parse_frame_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn frame_parts_follow_accept() {
        assert_eq!(accepts_parts(&headers("*/*"), "image/jpeg"), Some(false));
        assert_eq!(accepts_parts(&headers(r#"multipart/related; type="image/jpeg""#), "image/jpeg"), Some(false));
        assert_eq!(
            accepts_parts(&headers(r#"multipart/related; type="application/octet-stream""#), "image/jpeg"),
            None
        );
        assert_eq!(accepts_parts(&headers("application/octet-stream"), "application/octet-stream"), Some(true));
    }
}
