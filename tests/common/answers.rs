//! Answers of etcd and T4 in one comparable form: a response as its JSON (the gateway's mapping of
//! the wire type) without what differs between two members by nature (their ids and raft terms),
//! or an error as its gRPC code and message.

use serde::Serialize;
use serde_json::{Value, json};

/// Drops what differs between two members by nature: their ids and raft terms, in every header.
pub fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(header)) = map.get_mut("header") {
                for field in ["cluster_id", "member_id", "raft_term"] {
                    header.remove(field);
                }
            }
            map.values_mut().for_each(normalise);
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// A gRPC answer as `{"ok": response}` (normalised) or `{"code": n, "message": text}`.
pub fn grpc_answer<T: Serialize>(result: Result<tonic::Response<T>, tonic::Status>) -> Value {
    match result {
        Ok(response) => {
            let mut value = serde_json::to_value(response.get_ref()).expect("a response encodes as JSON");
            normalise(&mut value);
            json!({ "ok": value })
        }
        Err(status) => json!({ "code": status.code() as i32, "message": status.message() }),
    }
}

/// Asserts that two servers gave the same answers, step by step: `want` etcd's, `got` T4's.
pub fn assert_same_answers<S: std::fmt::Display + PartialEq>(want: &[(S, Value)], got: &[(S, Value)]) {
    assert_eq!(want.len(), got.len(), "both servers ran every step");
    let differences: Vec<String> = want
        .iter()
        .zip(got)
        .filter(|(w, g)| w != g)
        .map(|((step, w), (_, g))| format!("{step}:\n  etcd {w}\n  t4   {g}"))
        .collect();
    let (count, steps) = (differences.len(), want.len());
    assert!(differences.is_empty(), "{count} of {steps} steps differ:\n{}", differences.join("\n"));
}

/// base64 of `bytes`, as the gateway carries bytes.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.as_ref().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
