//! An error with its causes on one line, for log lines and the error comments of protocol
//! answers (where a `source()` chain cannot travel).

/// `error: cause: cause of the cause ...`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_cause_is_named_in_order() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading the study")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("disk gone"));
        assert_eq!(super::error_chain(&e), "reading the study: disk gone");
    }
}
