//! Running a program to its end from a test, and checking how it ended:
//! shared by the tests that run the gateway's binary or an outside checker
//! (systemd-analyze, promtool).
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The path of the gateway's binary, as cargo built it for these tests.
pub const GATEWAY: &str = env!("CARGO_BIN_EXE_chime-gateway");

/// The gateway's binary ([`GATEWAY`]), ready for its arguments.
pub fn gateway() -> Command {
    Command::new(GATEWAY)
}

/// Runs `cmd` with `stdin` written to its standard input (`None`: closed at
/// once) and collects its exit status and output.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Asserts that the program succeeded; the failure names `what` and shows
/// its standard error.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The standard output of a program that must have succeeded
/// ([`assert_success`]).
pub fn success_stdout(out: Output, what: &str) -> String {
    assert_success(&out, what);
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts that a checker succeeded and had nothing to report on either
/// output.
pub fn assert_clean(out: &Output, what: &str) {
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "{what} ({}):\n{report}",
        out.status
    );
}
