//! A typed, blocking client of the admin API: one method per route, answers decoded into the
//! contract's types. The `vna` CLI talks to a running archive through it.
//!
//! Every call records the route it used (method and path template), so a test can prove that
//! it walked every route the OpenAPI document lists.

use crate::types::*;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The archive could not be reached.
    #[error("cannot reach the archive at {base} (is `vna serve` running?)")]
    Unreachable {
        /// The base URL.
        base: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The archive answered with an error.
    #[error("{status}: {message}{hint}", message = body.message, hint = if *status == StatusCode::UNAUTHORIZED { " (pass --token or set VNA_TOKEN)" } else { "" })]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The error body (built from the status when the answer had none).
        body: ErrorBody,
    },
    /// The answer did not decode as the contract says.
    #[error("unexpected answer from {route}")]
    Decode {
        /// The route.
        route: String,
        /// The decoding error.
        #[source]
        source: reqwest::Error,
    },
    /// The client could not be built.
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
}

impl ClientError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Percent-encodes one path segment.
fn segment(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The admin API of one archive.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: Client,
    visited: Mutex<BTreeSet<(String, String)>>,
}

type Result<T> = std::result::Result<T, ClientError>;

impl AdminClient {
    /// A client of the archive at `base` (e.g. `http://127.0.0.1:8080`), with a bearer token.
    pub fn new(base: &str, token: Option<String>) -> Result<Self> {
        let http = Client::builder().timeout(Duration::from_secs(3600)).build().map_err(ClientError::Build)?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), token, http, visited: Mutex::default() })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Routes called so far, as `(METHOD, template)`.
    pub fn visited(&self) -> BTreeSet<(String, String)> {
        self.visited.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Builds a request: `template` is the route as the OpenAPI document names it, `args` fill
    /// its `{...}` parameters in order.
    fn request(&self, method: Method, template: &str, args: &[&str]) -> RequestBuilder {
        if let Ok(mut v) = self.visited.lock() {
            v.insert((method.to_string(), template.to_string()));
        }
        let mut path = String::new();
        let mut args = args.iter();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            path.push_str(&rest[..open]);
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
            path.push_str(&segment(args.next().copied().unwrap_or_default()));
            rest = &rest[close..];
        }
        path.push_str(rest);
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let rsp = rb.send().map_err(|source| ClientError::Unreachable { base: self.base.clone(), source })?;
        let status = rsp.status();
        if status.is_success() {
            return Ok(rsp);
        }
        let text = rsp.text().unwrap_or_default();
        let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or_else(|_| ErrorBody {
            status: status.as_u16(),
            error: status.canonical_reason().unwrap_or("Error").to_string(),
            message: if text.is_empty() { status.to_string() } else { text },
        });
        Err(ClientError::Api { status, body })
    }

    fn json<T: DeserializeOwned>(&self, template: &str, rb: RequestBuilder) -> Result<T> {
        self.send(rb)?.json().map_err(|source| ClientError::Decode { route: template.to_string(), source })
    }

    fn text(&self, template: &str, rb: RequestBuilder) -> Result<String> {
        self.send(rb)?.text().map_err(|source| ClientError::Decode { route: template.to_string(), source })
    }

    fn get<T: DeserializeOwned>(&self, template: &str, args: &[&str]) -> Result<T> {
        self.json(template, self.request(Method::GET, template, args))
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, template: &str, args: &[&str], body: &B) -> Result<T> {
        self.json(template, self.request(Method::POST, template, args).json(body))
    }

    fn post_empty<T: DeserializeOwned>(&self, template: &str, args: &[&str]) -> Result<T> {
        self.json(template, self.request(Method::POST, template, args))
    }

    // ---- health ----

    /// `GET /healthz`.
    pub fn healthz(&self) -> Result<String> {
        self.text("/healthz", self.request(Method::GET, "/healthz", &[]))
    }

    /// `GET /readyz`.
    pub fn readyz(&self) -> Result<String> {
        self.text("/readyz", self.request(Method::GET, "/readyz", &[]))
    }

    /// `GET /metrics`: the Prometheus exposition.
    pub fn metrics(&self) -> Result<String> {
        self.text("/metrics", self.request(Method::GET, "/metrics", &[]))
    }

    /// `GET /api/openapi.json`.
    pub fn openapi(&self) -> Result<serde_json::Value> {
        self.get("/api/openapi.json", &[])
    }

    // ---- archive ----

    /// `GET /api/stats`.
    pub fn stats(&self) -> Result<Stats> {
        self.get("/api/stats", &[])
    }

    /// `GET /api/studies/{study}`.
    pub fn study(&self, study: &str) -> Result<StudySummary> {
        self.get("/api/studies/{study}", &[study])
    }

    // ---- tiers ----

    /// `POST /api/studies/{study}/move`.
    pub fn move_study(&self, study: &str, req: &MoveRequest) -> Result<TierJob> {
        self.post("/api/studies/{study}/move", &[study], req)
    }

    /// `GET /api/jobs`.
    pub fn jobs(&self) -> Result<TierJobList> {
        self.get("/api/jobs", &[])
    }

    /// `GET /api/jobs/{id}`.
    pub fn job(&self, id: u64) -> Result<TierJob> {
        self.get("/api/jobs/{id}", &[&id.to_string()])
    }

    /// `POST /api/scrub`.
    pub fn start_scrub(&self) -> Result<ScrubStatus> {
        self.post_empty("/api/scrub", &[])
    }

    /// `GET /api/scrub`.
    pub fn scrub(&self) -> Result<ScrubStatus> {
        self.get("/api/scrub", &[])
    }

    // ---- retention ----

    /// `POST /api/studies/{study}/delete`.
    pub fn delete_study(&self, study: &str, req: &DeleteRequest) -> Result<Deletion> {
        self.post("/api/studies/{study}/delete", &[study], req)
    }

    /// `GET /api/deletions`.
    pub fn deletions(&self) -> Result<DeletionList> {
        self.get("/api/deletions", &[])
    }

    /// `GET /api/deletions/{id}`.
    pub fn deletion(&self, id: &str) -> Result<Deletion> {
        self.get("/api/deletions/{id}", &[id])
    }

    /// `POST /api/deletions/{id}/undo`.
    pub fn undo_deletion(&self, id: &str, reason: &str) -> Result<Deletion> {
        self.post("/api/deletions/{id}/undo", &[id], &ReasonRequest { reason: reason.to_string() })
    }

    /// `GET /api/deletions/{id}/certificate`.
    pub fn certificate(&self, id: &str) -> Result<DeletionCertificate> {
        self.get("/api/deletions/{id}/certificate", &[id])
    }

    /// `GET /api/holds`.
    pub fn holds(&self) -> Result<HoldList> {
        self.get("/api/holds", &[])
    }

    /// `POST /api/holds`.
    pub fn set_hold(&self, req: &HoldRequest) -> Result<LegalHold> {
        self.post("/api/holds", &[], req)
    }

    /// `POST /api/holds/{id}/release`.
    pub fn release_hold(&self, id: &str, reason: &str) -> Result<HoldReleased> {
        self.post("/api/holds/{id}/release", &[id], &ReasonRequest { reason: reason.to_string() })
    }

    // ---- policy ----

    /// `GET /api/policy`.
    pub fn policy(&self) -> Result<PolicyView> {
        self.get("/api/policy", &[])
    }

    /// `PUT /api/policy` with a rule file.
    pub fn replace_policy(&self, rules_toml: &str) -> Result<RulesAccepted> {
        let rb = self.request(Method::PUT, "/api/policy", &[]).body(rules_toml.to_string());
        self.json("/api/policy", rb.header(reqwest::header::CONTENT_TYPE, "application/toml"))
    }

    /// `POST /api/policy/reload`.
    pub fn reload_policy(&self) -> Result<RulesAccepted> {
        self.post_empty("/api/policy/reload", &[])
    }

    /// `POST /api/policy/evaluate`.
    pub fn evaluate_policy(&self) -> Result<PassReport> {
        self.post_empty("/api/policy/evaluate", &[])
    }

    /// `GET /api/policy/simulate` (the rules in force), or `POST` with a candidate rule file.
    pub fn simulate(&self, query: &PolicyQuery, candidate_toml: Option<&str>) -> Result<SimulationReport> {
        let template = "/api/policy/simulate";
        let rb = match candidate_toml {
            Some(text) => self
                .request(Method::POST, template, &[])
                .header(reqwest::header::CONTENT_TYPE, "application/toml")
                .body(text.to_string()),
            None => self.request(Method::GET, template, &[]),
        };
        self.json(template, rb.query(query))
    }

    /// `GET /api/policy/explain/{study}`.
    pub fn explain(&self, study: &str, query: &PolicyQuery) -> Result<Explanation> {
        let template = "/api/policy/explain/{study}";
        self.json(template, self.request(Method::GET, template, &[study]).query(query))
    }

    // ---- audit ----

    /// `GET /api/audit` as JSON (the filter's `format` is ignored).
    pub fn audit(&self, filter: &AuditFilter) -> Result<AuditList> {
        let filter = AuditFilter { format: Some(AuditFormat::Json), ..filter.clone() };
        self.json("/api/audit", self.request(Method::GET, "/api/audit", &[]).query(&filter))
    }

    /// `GET /api/audit` as text in the filter's format (JSON or CSV), as the archive wrote it.
    pub fn audit_text(&self, filter: &AuditFilter) -> Result<String> {
        self.text("/api/audit", self.request(Method::GET, "/api/audit", &[]).query(filter))
    }

    /// `GET /api/audit/verify`.
    pub fn verify_audit(&self) -> Result<AuditVerdict> {
        self.get("/api/audit/verify", &[])
    }

    // ---- patients ----

    /// `POST /api/patients/link`.
    pub fn link_patients(&self, req: &LinkRequest) -> Result<PatientLink> {
        self.post("/api/patients/link", &[], req)
    }

    /// `GET /api/patient-links`.
    pub fn links(&self) -> Result<LinkList> {
        self.get("/api/patient-links", &[])
    }

    /// `POST /api/patient-links/{id}/undo`.
    pub fn undo_link(&self, id: &str, reason: &str) -> Result<PatientLink> {
        self.post("/api/patient-links/{id}/undo", &[id], &ReasonRequest { reason: reason.to_string() })
    }

    // ---- pulls ----

    /// `POST /api/pulls`.
    pub fn start_pull(&self, req: &PullRequest) -> Result<PullJob> {
        self.post("/api/pulls", &[], req)
    }

    /// `GET /api/pulls`.
    pub fn pulls(&self) -> Result<PullList> {
        self.get("/api/pulls", &[])
    }

    /// `GET /api/pulls/{id}`.
    pub fn pull(&self, id: &str) -> Result<PullJob> {
        self.get("/api/pulls/{id}", &[id])
    }

    /// `GET /api/pulls/{id}/studies`.
    pub fn pull_studies(&self, id: &str) -> Result<PullStudyList> {
        self.get("/api/pulls/{id}/studies", &[id])
    }

    /// `GET /api/pulls/{id}/report`.
    pub fn pull_report(&self, id: &str) -> Result<PullReport> {
        self.get("/api/pulls/{id}/report", &[id])
    }

    /// `POST /api/pulls/{id}/cancel`.
    pub fn cancel_pull(&self, id: &str) -> Result<PullJob> {
        self.post_empty("/api/pulls/{id}/cancel", &[id])
    }
}
