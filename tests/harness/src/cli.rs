//! Reading what `plinth` and `temporal` commands printed, and waiting for the control plane.

use std::process::{Command, Output, Stdio};

pub use plinth_test_support::wait_for;

/// Exit status, stdout and stderr, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` with `stdin` as its standard input; its output.
pub fn with_input(command: &mut Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the command");
    // A command that exits without reading its input is answered all the same.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().expect("the command's output")
}

/// Runs the `temporal` CLI with `args` against the server at `address`.
pub fn temporal(args: &[&str], address: &str) -> Output {
    Command::new(crate::temporal_bin())
        .args(args)
        .args(["--address", address])
        .output()
        .expect("run the temporal CLI")
}

/// Runs the `temporal` CLI with `args` and the profile `team` of `profile`, a file
/// `PlinthStack::profile` wrote.
pub fn temporal_as(profile: &std::path::Path, args: &[&str]) -> Output {
    Command::new(crate::temporal_bin())
        .args(args)
        .arg("--config-file")
        .arg(profile)
        .args(["--profile", "team"])
        .output()
        .expect("run the temporal CLI")
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The output of a command that must have succeeded.
#[track_caller]
pub fn ok(output: Output) -> Output {
    assert!(output.status.success(), "{}", text(&output));
    output
}

/// A Namespace resource in the seed's shape; `extra_spec` is appended to the spec.
pub fn namespace_yaml(
    name: &str,
    temporal_name: &str,
    owner: &str,
    retention: u32,
    extra_spec: &str,
) -> String {
    format!(
        "apiVersion: temporal.plinth.dev/v1beta1\n\
         kind: Namespace\n\
         metadata:\n  name: {name}\n  namespace: payments\n\
         spec:\n  name: {temporal_name}\n  owner: {owner}\n  regions: [us-east-1]\n  \
         retentionDays: {retention}\n{extra_spec}"
    )
}
