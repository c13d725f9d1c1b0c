//! The traffic `benches/pgo.sh` trains the profile-guided build on
//! (`benches/compare/train.lua`) gets the answers it is meant to train: if a
//! report were renamed or a key changed, the training would quietly turn
//! into refusals and the build would be optimised for them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use std::collections::HashMap;

use harness::Harness;
use http::StatusCode;

const MIX: &str = include_str!("../benches/compare/train.lua");

/// One request of the mix: target, whose key, expected status.
struct Line {
    target: String,
    key: &'static str,
    status: StatusCode,
}

/// The mix's keys as the script sends them, by name: its `name = "Bearer
/// KEY",` lines. Taken from the script rather than from the test's own
/// constants, so a key changed in the script is caught.
fn keys() -> HashMap<&'static str, &'static str> {
    MIX.lines()
        .filter_map(|l| {
            let (name, value) = l.trim().split_once(" = \"Bearer ")?;
            Some((name, value.strip_suffix("\",")?))
        })
        .collect()
}

/// The mix's request lines, `{"target", "key", status},`: every line
/// that opens a quoted table entry, so a malformed one fails instead of
/// being left out.
fn lines() -> Vec<Line> {
    let keys = keys();
    MIX.lines()
        .filter_map(|l| l.trim().strip_prefix("{\""))
        .map(|l| {
            let l = l
                .strip_suffix("},")
                .unwrap_or_else(|| panic!("a request line ends with `}},`: {l}"));
            let fields: Vec<&str> = l.split(", ").collect();
            let [target, key, status] = fields[..] else {
                panic!("not target, key, status: {l}");
            };
            let name = key.trim_matches('"');
            let key = *keys
                .get(name)
                .unwrap_or_else(|| panic!("no key named {name} in the mix"));
            Line {
                target: target.trim_end_matches('"').to_owned(),
                key,
                status: StatusCode::from_u16(status.parse().expect("a status")).expect("a status"),
            }
        })
        .collect()
}

#[tokio::test]
async fn every_request_of_the_training_mix_gets_the_answer_it_trains() {
    let lines = lines();
    assert_eq!(lines.len(), 9, "the mix as written in train.lua");
    assert_eq!(keys().len(), 3, "manager, admin and unknown");
    let answered = lines.iter().filter(|l| l.status == StatusCode::OK).count();
    assert!(answered >= 6, "most of the mix is answered, not refused");
    let h = Harness::start().await;
    for line in &lines {
        let got = h.get_as(line.key, &line.target).await;
        assert_eq!(got.status, line.status, "{}: {}", line.target, got.text());
    }
}
