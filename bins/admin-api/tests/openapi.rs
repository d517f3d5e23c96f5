//! `docs/openapi.json` is generated from the handlers and types; this test fails when it
//! drifts (`UPDATE_OPENAPI=1 cargo test -p admin-api --test openapi` rewrites it).
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn docs_openapi_json_is_the_generated_document() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = admin_api::openapi::json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/openapi.json differs from the generated document: run UPDATE_OPENAPI=1 cargo test -p admin-api --test openapi"
    );
}

#[test]
fn every_operation_documents_its_answers_and_path_parameters() {
    let doc: serde_json::Value = serde_json::from_str(admin_api::openapi::json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 30, "{} paths", paths.len());
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has no responses");
            assert!(op["description"].is_string() || op["summary"].is_string(), "{method} {path} is not described");
            let params: Vec<&str> =
                op["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
            for name in path.split('{').skip(1).filter_map(|s| s.split('}').next()) {
                assert!(params.contains(&name), "{method} {path} does not document its parameter {name}");
            }
        }
    }
    // Every schema a route refers to is defined.
    let text = admin_api::openapi::json();
    for reference in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(doc["components"]["schemas"][name].is_object(), "schema {name} is referred to but not defined");
    }
}
