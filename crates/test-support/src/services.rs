//! Where the services a test needs are, and whether it may run without
//! them. Each lookup returns the service's endpoint, or `None` after a
//! `not run: <why>` notice; under `CHATSTREAM_TEST_STRICT=1` (set by
//! `scripts/test.sh`) a missing service fails the test instead.
//!
//! What only a real Kafka or ScyllaDB can do is the exception: no such
//! server runs on the test machines, so [`not_run_here`] never fails.
use std::fmt::Display;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";
const DEFAULT_KAFKA: &str = "127.0.0.1:9092";
const DEFAULT_CQL: &str = "127.0.0.1:9042";
/// How long a reachability check may wait for a service to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this run must run every test: `CHATSTREAM_TEST_STRICT=1`.
pub fn strict() -> bool {
    std::env::var("CHATSTREAM_TEST_STRICT").is_ok_and(|value| value == "1")
}

/// Reports a test (or a case) as not run because of `why`, and returns
/// `None`; in a strict run it fails instead.
pub fn not_run<T>(why: impl Display) -> Option<T> {
    let notice = format!("not run: {why}");
    assert!(
        !strict(),
        "{notice} (CHATSTREAM_TEST_STRICT=1: every test must run)"
    );
    say(&notice);
    None
}

/// Reports as not run what needs a server no test machine has (a real
/// Kafka or ScyllaDB): never a failure, strict or not.
pub fn not_run_here(why: impl Display) {
    say(&format!("not run: {why}"));
}

/// Straight to stderr: the test harness captures `print!` and `eprint!`
/// of passing tests, and a "not run" must be seen.
pub fn say(notice: &str) {
    let _ = writeln!(std::io::stderr(), "{notice}");
}

/// A non-blank environment variable.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// The shared Redis at `CHATSTREAM_TEST_REDIS` (default
/// `redis://127.0.0.1:6379`), when it answers `PING`.
pub fn redis() -> Option<String> {
    shared(Shared::Redis)
}

/// The Kafka-protocol broker's bootstrap servers at `CHATSTREAM_TEST_KAFKA`
/// (default `127.0.0.1:9092`), when the first of them accepts a connection.
pub fn kafka() -> Option<String> {
    shared(Shared::Kafka)
}

/// The CQL server at `CHATSTREAM_TEST_CQL` (default `127.0.0.1:9042`;
/// `scripts/test.sh` starts `cql-test-server`), when the first of its
/// addresses accepts a connection.
pub fn cql() -> Option<String> {
    shared(Shared::Cql)
}

/// The services tests share, in [`SHARED`]'s order.
#[derive(Clone, Copy)]
enum Shared {
    Redis,
    Kafka,
    Cql,
}

/// What answers when a shared service is there.
type Check = fn(&str) -> Result<(), String>;

/// Per shared service: its env var, default address, the check that it is
/// there, and what is missing when the check fails.
#[rustfmt::skip] // a table: one service a line
const SHARED: [(&str, &str, Check, &str); 3] = [
    ("CHATSTREAM_TEST_REDIS", DEFAULT_REDIS, redis_answers, "no Redis"),
    ("CHATSTREAM_TEST_KAFKA", DEFAULT_KAFKA, accepts_connections, "no Kafka-protocol broker"),
    ("CHATSTREAM_TEST_CQL", DEFAULT_CQL, accepts_connections, "no CQL test server"),
];

/// A shared service's address when it answers (checked once per test
/// binary: a missing service fails fast in every test after the first).
fn shared(service: Shared) -> Option<String> {
    static ANSWERS: [OnceLock<Result<(), String>>; 3] = [const { OnceLock::new() }; 3];
    let (variable, default, check, missing) = SHARED[service as usize];
    let address = env(variable).unwrap_or_else(|| default.to_owned());
    match ANSWERS[service as usize].get_or_init(|| check(&address)) {
        Ok(()) => Some(address),
        Err(error) => not_run(format!("{missing} at {address} ({error})")),
    }
}

/// The real ScyllaDB's contact points at `CHATSTREAM_TEST_SCYLLA`, when
/// given; otherwise says that `what` needs one, strict or not.
pub fn real_scylla(what: &str) -> Option<String> {
    let nodes = env("CHATSTREAM_TEST_SCYLLA");
    if nodes.is_none() {
        not_run_here(format!(
            "{what}: needs a real ScyllaDB; set CHATSTREAM_TEST_SCYLLA"
        ));
    }
    nodes
}

/// An executable of the MCP test servers named by `variable`
/// (`CHATSTREAM_TEST_MCP_EVERYTHING`, `CHATSTREAM_TEST_MCP_TIME`).
pub fn mcp_server(variable: &str) -> Option<String> {
    env(variable).or_else(|| {
        not_run(format!(
            "{variable} is not set (scripts/test.sh installs the MCP test servers)"
        ))
    })
}

/// The Python of the venv that holds `mcp-server-time` (the official
/// `mcp` package comes with it), for MCP servers written for the tests.
pub fn mcp_python() -> Option<String> {
    let time = mcp_server("CHATSTREAM_TEST_MCP_TIME")?;
    let python = Path::new(&time).with_file_name("python");
    if python.is_file() {
        return Some(python.display().to_string());
    }
    not_run(format!(
        "no python next to {time} (scripts/test.sh makes that venv)"
    ))
}

/// The Python at `CHATSTREAM_TEST_PYTHON`, when it can import the official
/// `openai` package.
pub fn python_with_openai() -> Option<String> {
    let found = env("CHATSTREAM_TEST_PYTHON")
        .ok_or_else(|| "CHATSTREAM_TEST_PYTHON is not set (scripts/test.sh sets it)".to_owned())
        .and_then(|python| {
            can_run(&python, &["-c", "import openai"], "the openai SDK")?;
            Ok(python)
        });
    found.map_or_else(not_run, Some)
}

/// The directory at `CHATSTREAM_TEST_OPENAI_JS` whose `node_modules` holds
/// the official `openai` JavaScript package, when Node.js (on `PATH`) can
/// load it from there.
pub fn openai_js() -> Option<String> {
    let load = "require('node:module').createRequire(process.argv[1] + '/')('openai')";
    let found = env("CHATSTREAM_TEST_OPENAI_JS")
        .ok_or_else(|| "CHATSTREAM_TEST_OPENAI_JS is not set (scripts/test.sh sets it)".to_owned())
        .and_then(|dir| {
            can_run("node", &["-e", load, &dir], "the openai SDK")?;
            Ok(dir)
        });
    found.map_or_else(not_run, Some)
}

/// The Python at `CHATSTREAM_TEST_KAFKA_EXAMPLE_PYTHON`, when it can
/// import what `examples/kafka-analytics-consumer/requirements.txt` installs.
pub fn python_for_kafka_example() -> Option<String> {
    let found = env("CHATSTREAM_TEST_KAFKA_EXAMPLE_PYTHON")
        .ok_or_else(|| {
            "CHATSTREAM_TEST_KAFKA_EXAMPLE_PYTHON is not set (scripts/test.sh sets it)".to_owned()
        })
        .and_then(|python| {
            let imports = "import confluent_kafka, google.protobuf, grpc_tools";
            can_run(&python, &["-c", imports], "the example's requirements")?;
            Ok(python)
        });
    found.map_or_else(not_run, Some)
}

/// The `helm` binary at `CHATSTREAM_TEST_HELM` (scripts/test.sh unpacks
/// it from an npm package), when it runs.
pub fn helm() -> Option<String> {
    let found = env("CHATSTREAM_TEST_HELM")
        .ok_or_else(|| "CHATSTREAM_TEST_HELM is not set (scripts/test.sh sets it)".to_owned())
        .and_then(|helm| {
            can_run(&helm, &["version", "--short"], "its version")?;
            Ok(helm)
        });
    found.map_or_else(not_run, Some)
}

/// The Python at `CHATSTREAM_TEST_DEPLOY_PYTHON`, when it can import
/// `kubernetes_validate` (the Kubernetes schemas, offline) and `yaml`.
pub fn python_for_manifests() -> Option<String> {
    let found = env("CHATSTREAM_TEST_DEPLOY_PYTHON")
        .ok_or_else(|| {
            "CHATSTREAM_TEST_DEPLOY_PYTHON is not set (scripts/test.sh sets it)".to_owned()
        })
        .and_then(|python| {
            let imports = "import kubernetes_validate, yaml";
            can_run(&python, &["-c", imports], "kubernetes-validate and PyYAML")?;
            Ok(python)
        });
    found.map_or_else(not_run, Some)
}

/// Runs `program` to see that it loads `what`; why not, if not.
fn can_run(program: &str, args: &[&str], what: &str) -> Result<(), String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Python ends its traceback with the error; Node.js prints it first.
    let reason = stderr
        .lines()
        .find(|line| line.contains("Error"))
        .or_else(|| stderr.lines().rfind(|line| !line.trim().is_empty()))
        .unwrap_or("no output");
    Err(format!("{program} cannot load {what}: {reason}"))
}

/// Whether the first of the comma-separated `host:port` addresses accepts
/// a TCP connection.
pub fn accepts_connections(addresses: &str) -> Result<(), String> {
    connect(addresses.split(',').next().unwrap_or_default().trim()).map(drop)
}

/// Whether a Redis answers `PING` at `url`
/// (`redis://[user[:password]@]host[:port][/db]`). A reply asking for a
/// password counts: a Redis is there.
pub fn redis_answers(url: &str) -> Result<(), String> {
    let address = url.split_once("://").map_or(url, |(_, rest)| rest);
    let address = address.rsplit_once('@').map_or(address, |(_, host)| host);
    let address = address.split('/').next().unwrap_or_default();
    let address = if address.contains(':') {
        address.to_owned()
    } else {
        format!("{address}:6379")
    };
    let mut stream = connect(&address)?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.write_all(b"PING\r\n"))
        .map_err(|error| error.to_string())?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|error| error.to_string())?;
    if reply.starts_with("+PONG") || reply.starts_with("-NOAUTH") {
        Ok(())
    } else {
        Err(format!("PING answered {:?}", reply.trim_end()))
    }
}

fn connect(address: &str) -> Result<TcpStream, String> {
    let socket = address
        .to_socket_addrs()
        .map_err(|error| error.to_string())?
        .next()
        .ok_or_else(|| format!("{address} resolves to nothing"))?;
    TcpStream::connect_timeout(&socket, PROBE_TIMEOUT).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_listening_is_refused_with_the_reason() {
        let port = crate::ports::free_port();
        let error = accepts_connections(&format!("127.0.0.1:{port},elsewhere:1")).unwrap_err();
        assert!(error.to_lowercase().contains("refused"), "{error}");
        assert!(redis_answers(&format!("redis://user:pw@127.0.0.1:{port}/0")).is_err());
    }
}
