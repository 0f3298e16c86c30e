//! What `chatstream` writes to standard error when it is not a terminal (a
//! file, a pipe, a log collector): plain text, without ANSI colour codes.

/// Needs nothing but the binary: `dev` logs its start, then fails on a
/// port that is taken.
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("address").port().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatstream"))
        .args([
            "dev",
            "--http-port",
            &port,
            "--grpc-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .env("LOG_LEVEL", "info")
        .env_remove("CHATSTREAM_LOG_FORMAT")
        .env_remove("CHATSTREAM_CONFIG")
        .output()
        .expect("run chatstream dev");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the port is taken: {stderr}");
    assert!(stderr.contains("starting chatstream dev"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in piped logs: {stderr:?}"
    );
}
