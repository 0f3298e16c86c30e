//! The deployment artifacts in `deploy/`, `.github/workflows/ci-cd.yml` and
//! `scripts/deploy.sh` hold to what the code really is: every `chatstream`
//! subcommand they run is one the binary has, every script and file they
//! name exists, the config they give the binary is one its own loader
//! accepts, the metrics their dashboards and alerts query are ones the code
//! exports, and the Helm chart renders (for both environments' values and a
//! set of option combinations) into manifests that pass `helm lint` and the
//! Kubernetes schemas, with hardened pods, probes on the real port and one
//! autoscaler per component. Bad values fail `values.schema.json`.
//!
//! helm comes from `CHATSTREAM_TEST_HELM` and the schema validator
//! (kubernetes-validate) from the Python at `CHATSTREAM_TEST_DEPLOY_PYTHON`,
//! both installed by `scripts/test.sh`; without them the chart tests print
//! "not run: ..." unless `CHATSTREAM_TEST_STRICT=1`, which fails them. No
//! image is built and nothing is deployed: the test machines have no Docker
//! engine and no cluster.
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use chatstream_config::Config;
use chatstream_config::tenants::TenantRegistry;
use chatstream_test_support::services;
use serde_json::{Value, json};

const KUBE_VERSION: &str = "1.30.0";
const CHART: &str = "deploy/helm/chatstream";
/// The roles the chart and the compose file run, and the processor kind of each.
const COMPONENTS: [(&str, Option<&str>); 5] = [
    ("gateway", None),
    ("projector", Some("conversation-projector")),
    ("router", Some("router")),
    ("mcp", Some("mcp")),
    ("analytics", Some("analytics")),
];
/// The port every role serves /health, /ready and /metrics on in the image.
const HTTP_PORT: u64 = 8000;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// A YAML document as JSON, with `<<` merge keys applied (compose uses them).
fn yaml_to_json(text: &str, what: &str) -> Value {
    let mut value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{what} is not YAML: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{what}: bad merge key: {e}"));
    serde_json::to_value(value).unwrap_or_else(|e| panic!("{what}: not JSON-like: {e}"))
}

/// Every document of a multi-document YAML stream (`helm template`
/// output: documents start at a `---` line), as JSON.
fn yaml_documents(text: &str) -> Vec<Value> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            documents.push(String::new());
        } else if let Some(current) = documents.last_mut() {
            current.push_str(line);
            current.push('\n');
        }
    }
    documents
        .iter()
        .map(|document| yaml_to_json(document, "a rendered manifest"))
        .filter(|value| !value.is_null())
        .collect()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// ---------------------------------------------------------------------------
// What the binary really offers: its subcommands, read from its own --help.

/// Every command path of the `chatstream` binary: `gateway`, `dev`,
/// `topics create`, `schema apply`, `processor router`, ...
fn subcommands() -> &'static BTreeSet<String> {
    static COMMANDS: OnceLock<BTreeSet<String>> = OnceLock::new();
    COMMANDS.get_or_init(|| {
        let binary = env!("CARGO_BIN_EXE_chatstream");
        let mut commands = BTreeSet::new();
        for top in help_commands(&stdout(&run(binary, &["--help"]))) {
            let help = stdout(&run(binary, &[&top, "--help"]));
            let subs = help_commands(&help);
            let values = possible_values(&help);
            commands.insert(top.clone());
            for sub in subs.iter().chain(&values) {
                commands.insert(format!("{top} {sub}"));
            }
        }
        for expected in [
            "gateway",
            "processor router",
            "topics create",
            "schema apply",
            "dev",
        ] {
            assert!(
                commands.contains(expected),
                "`chatstream --help` does not list `{expected}`: {commands:?}"
            );
        }
        commands
    })
}

/// The names under `Commands:` in clap's help (without `help`).
fn help_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// A positional argument's possible values (`processor <KIND>`), in either
/// of clap's forms: `- name: doc` lines or `[possible values: a, b]`.
fn possible_values(help: &str) -> Vec<String> {
    let mut values: Vec<String> = help
        .lines()
        .skip_while(|line| !line.trim().starts_with("Possible values:"))
        .skip(1)
        .take_while(|line| line.trim().starts_with("- "))
        .filter_map(|line| line.trim().strip_prefix("- "))
        .map(|value| value.split(':').next().unwrap_or(value).trim().to_owned())
        .collect();
    if let Some(start) = help.find("[possible values: ") {
        let rest = &help[start + "[possible values: ".len()..];
        let list = &rest[..rest.find(']').unwrap_or(rest.len())];
        values.extend(list.split(',').map(|value| value.trim().to_owned()));
    }
    values
}

/// Fails unless `words` (what follows `chatstream`) start with a real
/// command path: a command with subcommands must be given one of them.
fn assert_real_subcommand(words: &[&str], context: &str) {
    let commands = subcommands();
    let first = words.first().copied().unwrap_or_default();
    assert!(
        commands.contains(first),
        "{context}: `chatstream {}` is not a subcommand of the binary (it has {commands:?})",
        words.join(" ")
    );
    let has_subcommands = commands
        .iter()
        .any(|command| command.starts_with(&format!("{first} ")));
    if has_subcommands {
        let two = format!("{first} {}", words.get(1).copied().unwrap_or_default());
        assert!(
            commands.contains(&two),
            "{context}: `chatstream {}` names no subcommand of `{first}` (it has {commands:?})",
            words.join(" ")
        );
    }
}

/// Every `chatstream <subcommand>` a shell text runs: the word `chatstream`
/// (or a path ending in `/chatstream`) at the start of a command, after
/// `--` (kubectl exec), `&&`, `;`, `|` or `$(`. Lines joined at `\`.
fn shell_invocations(text: &str, program: &str) -> Vec<Vec<String>> {
    let joined = text.replace("\\\n", " ");
    let mut found = Vec::new();
    for line in joined.lines() {
        let line = line.trim_start();
        if line.starts_with('#') {
            continue;
        }
        let words: Vec<String> = line
            .split_whitespace()
            .map(|word| word.trim_matches(|c| c == '"' || c == '\'').to_owned())
            .collect();
        for (at, word) in words.iter().enumerate() {
            let word = word.strip_prefix("$(").unwrap_or(word);
            // The program by name, or by the path of a built or installed
            // binary (not a path that merely ends in the name, like a chart's).
            let is_program = word == program
                || (word.ends_with(&format!("/{program}"))
                    && (word.starts_with('/')
                        || word.starts_with("./")
                        || word.contains("target/"))
                    && !word.contains('='));
            let starts_command = at == 0
                || matches!(
                    words[at - 1].as_str(),
                    "--" | "&&" | ";" | "|" | "||" | "exec" | "run:" | "-ec"
                )
                || words[at].starts_with("$(");
            if is_program && starts_command {
                found.push(
                    words[at + 1..]
                        .iter()
                        .take_while(|w| !matches!(w.as_str(), "&&" | ";" | "|" | "||"))
                        .cloned()
                        .collect(),
                );
            }
        }
    }
    found
}

/// Every flag the load tester accepts, from its clap definition
/// (`loadtest/src/cli.rs`): `long` fields, by name or by `long = "..."`.
fn loadtest_flags() -> BTreeSet<String> {
    let source = read("loadtest/src/cli.rs");
    let mut flags: BTreeSet<String> = ["--help", "--version"].map(str::to_owned).into();
    let mut pending_long: Option<Option<String>> = None;
    for line in source.lines() {
        let line = line.trim();
        if line.starts_with("#[arg(") && line.contains("long") {
            let explicit = line
                .split("long = \"")
                .nth(1)
                .and_then(|rest| rest.split('"').next());
            pending_long = Some(explicit.map(str::to_owned));
        } else if let Some(rest) = line.strip_prefix("pub ")
            && let Some((field, _)) = rest.split_once(':')
            && let Some(long) = pending_long.take()
        {
            let name = long.unwrap_or_else(|| field.trim().replace('_', "-"));
            flags.insert(format!("--{name}"));
        }
    }
    assert!(
        flags.contains("--max-p99-ms") && flags.contains("--max-error-rate"),
        "the load tester's SLO gates are not where this test looks: {flags:?}"
    );
    flags
}

/// Repository paths a text names (scripts/, deploy/, .ci/, tests/,
/// loadtest/, docs/), without variables or globs.
fn repo_paths(text: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for word in text.split(|c: char| c.is_whitespace() || "\"'`(),;=".contains(c)) {
        for prefix in [
            "scripts/",
            "deploy/",
            ".ci/",
            "tests/",
            "loadtest/",
            "docs/",
        ] {
            if let Some(at) = word.find(prefix) {
                let path = word[at..].trim_end_matches([':', '.', '}']);
                let before = &word[..at];
                let is_repo_path = before.is_empty() || before == "./";
                if is_repo_path && !path.contains(['$', '*', '{', '<']) && path.len() > prefix.len()
                {
                    paths.insert(path.to_owned());
                }
            }
        }
    }
    paths
}

fn assert_paths_exist(text: &str, context: &str) -> BTreeSet<String> {
    let paths = repo_paths(text);
    for path in &paths {
        assert!(
            repo().join(path).exists(),
            "{context} names {path}, which does not exist"
        );
    }
    paths
}

// ---------------------------------------------------------------------------
// What the code exports: metric names, HTTP routes.

/// Every metric name the code registers: the metric catalog every
/// component describes on `/metrics` (`chatstream_core::metric_catalog`).
fn exported_metrics() -> &'static BTreeSet<String> {
    static METRICS: OnceLock<BTreeSet<String>> = OnceLock::new();
    METRICS.get_or_init(|| {
        let names: BTreeSet<String> = chatstream_core::metric_catalog::METRICS
            .iter()
            .map(|metric| metric.name.to_owned())
            .collect();
        for must in [
            "chatstream_processor_lag",
            "chatstream_gateway_connections",
            "gen_ai_client_operation_time_to_first_chunk_seconds",
        ] {
            assert!(
                names.contains(must),
                "{must} is not in the metric catalog: {names:?}"
            );
        }
        names
    })
}

fn collect_rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("tests") && !path.ends_with("target") {
                collect_rust_files(&path, into);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The metric names a PromQL expression uses (`chatstream_*`, `gen_ai_*`),
/// with `_bucket`, `_count` and `_sum` taken off.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &expr[at..];
        let starts_word =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        if starts_word && (rest.starts_with("chatstream_") || rest.starts_with("gen_ai_client_")) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let mut name = &rest[..end];
            for suffix in ["_bucket", "_count", "_sum"] {
                name = name.strip_suffix(suffix).unwrap_or(name);
            }
            names.insert(name.to_owned());
            at += end;
        } else {
            at += 1;
        }
    }
    names
}

fn assert_metrics_exported(expr: &str, context: &str) -> BTreeSet<String> {
    let used = promql_metrics(expr);
    for name in &used {
        assert!(
            exported_metrics().contains(name),
            "{context} queries {name}, which the code does not export (it exports {:?})",
            exported_metrics()
        );
    }
    used
}

/// Every HTTP path the gateway routes (`.route("/...")` in gateway/src).
fn gateway_routes() -> BTreeSet<String> {
    let mut sources = Vec::new();
    collect_rust_files(&repo().join("gateway/src"), &mut sources);
    let mut routes = BTreeSet::new();
    for path in sources {
        let text = std::fs::read_to_string(&path).expect("source");
        for piece in text.split(".route(").skip(1) {
            if let Some(route) = piece
                .trim_start()
                .strip_prefix('"')
                .and_then(|r| r.split('"').next())
            {
                routes.insert(route.to_owned());
            }
        }
    }
    assert!(
        routes.contains("/api/v2/chat/ws"),
        "gateway routes: {routes:?}"
    );
    routes
}

// ---------------------------------------------------------------------------
// The Dockerfile.

/// Stages of a Dockerfile: (name, base image, instructions with their
/// continuation lines joined).
fn dockerfile_stages(text: &str) -> Vec<(String, String, Vec<String>)> {
    let joined = text.replace("\\\n", " ");
    let mut stages: Vec<(String, String, Vec<String>)> = Vec::new();
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("FROM ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("AS"))
                .and_then(|at| words.get(at + 1))
                .map_or_else(|| format!("stage{}", stages.len()), |n| n.to_string());
            stages.push((name, words[0].to_owned(), Vec::new()));
        } else if let Some(stage) = stages.last_mut() {
            stage.2.push(line.to_owned());
        }
    }
    stages
}

/// The environment the image sets (`ENV` in its last stage).
fn image_env() -> BTreeMap<String, String> {
    let stages = dockerfile_stages(&read("deploy/docker/Dockerfile"));
    let (_, _, runtime) = stages.last().expect("stages");
    let mut env = BTreeMap::new();
    for instruction in runtime.iter().filter_map(|i| i.strip_prefix("ENV ")) {
        for pair in instruction.split_whitespace() {
            let (name, value) = pair.split_once('=').expect("ENV NAME=value");
            env.insert(name.to_owned(), value.trim_matches('"').to_owned());
        }
    }
    env
}

/// Loads `file` with the binary's own loader as a role in the image would:
/// the image's environment on top; and checks that environment changes
/// nothing the file says (variables win over the file).
fn load_as_in_the_image(file: &Path, context: &str) -> Config {
    let image_env = image_env();
    let with_image_env =
        Config::from_layers(Some(file), |name| image_env.get(name).cloned(), |_| {})
            .unwrap_or_else(|e| panic!("{context}: the binary's config loader rejects it: {e}"));
    let file_only = Config::from_layers(Some(file), |_| None, |_| {})
        .unwrap_or_else(|e| panic!("{context}: the binary's config loader rejects it: {e}"));
    assert_eq!(
        with_image_env, file_only,
        "{context}: the image's ENV ({image_env:?}) overrides what the file says"
    );
    with_image_env
}

fn json_array_instruction(instruction: &str, keyword: &str) -> Vec<String> {
    let body = instruction.strip_prefix(keyword).expect("keyword").trim();
    serde_json::from_str(body).unwrap_or_else(|e| {
        panic!("{keyword} must use the exec (JSON array) form: {instruction}: {e}")
    })
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_a_health_check_and_the_real_binary() {
    let text = read("deploy/docker/Dockerfile");
    let stages = dockerfile_stages(&text);
    let names: Vec<&str> = stages.iter().map(|(name, _, _)| name.as_str()).collect();
    for stage in ["planner", "builder", "runtime"] {
        assert!(names.contains(&stage), "no `{stage}` stage: {names:?}");
    }
    let (last, base, runtime) = stages.last().expect("stages");
    assert_eq!(
        last, "runtime",
        "the runtime stage must be the last (the image)"
    );
    assert!(
        base.contains("-slim") || base.contains("distroless"),
        "the runtime image {base} is not a small one"
    );

    // The dependency layer: cargo chef cook on the recipe alone, before the
    // sources come in.
    let (_, _, builder) = stages
        .iter()
        .find(|(name, _, _)| name == "builder")
        .expect("builder");
    let cook = builder
        .iter()
        .position(|i| i.contains("cargo chef cook"))
        .expect("cargo chef cook in builder");
    let sources = builder
        .iter()
        .position(|i| i.starts_with("COPY . ."))
        .expect("COPY . . in builder");
    assert!(
        cook < sources,
        "dependencies must be built before the sources are copied in"
    );
    assert!(
        builder[cook].contains("--locked")
            && builder
                .iter()
                .any(|i| i.contains("cargo build") && i.contains("--locked")),
        "the builds must be --locked"
    );

    // The binary it copies is what cargo produces for this package.
    let binary_name = Path::new(env!("CARGO_BIN_EXE_chatstream"))
        .file_name()
        .expect("binary name")
        .to_string_lossy()
        .into_owned();
    let cargo_output = format!("target/release/{binary_name}");
    let build = builder
        .iter()
        .find(|i| i.contains("cargo build"))
        .expect("cargo build");
    assert!(
        build.contains(&format!("--bin {binary_name}")),
        "cargo build must build --bin {binary_name}: {build}"
    );
    assert!(
        build.contains(&cargo_output),
        "the builder must take the binary from {cargo_output}: {build}"
    );

    // Non-root user, numeric (so runAsNonRoot can check it).
    let user = runtime
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("USER in the runtime stage");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid != 0),
        "the runtime user must be a numeric non-root uid, not {user}"
    );

    // ENTRYPOINT runs the binary the stage copied in; CMD is a real subcommand.
    let copied: Vec<&str> = runtime
        .iter()
        .filter_map(|i| i.strip_prefix("COPY "))
        .filter_map(|rest| rest.split_whitespace().last())
        .collect();
    let entrypoint = json_array_instruction(
        runtime
            .iter()
            .find(|i| i.starts_with("ENTRYPOINT "))
            .expect("ENTRYPOINT"),
        "ENTRYPOINT",
    );
    let program = entrypoint.last().expect("ENTRYPOINT program");
    assert!(
        program.ends_with(&format!("/{binary_name}")),
        "ENTRYPOINT must run {binary_name}: {entrypoint:?}"
    );
    assert!(
        copied.contains(&program.as_str()),
        "ENTRYPOINT runs {program}, which no COPY put there ({copied:?})"
    );
    let cmd = json_array_instruction(
        runtime.iter().find(|i| i.starts_with("CMD ")).expect("CMD"),
        "CMD",
    );
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    assert_real_subcommand(&cmd, "the Dockerfile's CMD");

    // HEALTHCHECK runs a script the stage copied in from the repository.
    let health = runtime
        .iter()
        .find(|i| i.starts_with("HEALTHCHECK "))
        .expect("HEALTHCHECK in the runtime stage");
    let check = health.split("CMD").nth(1).expect("HEALTHCHECK CMD");
    let check: Vec<String> =
        serde_json::from_str(check.trim()).expect("HEALTHCHECK CMD in exec form");
    let copy = runtime
        .iter()
        .find(|i| i.starts_with("COPY ") && i.ends_with(&check[0]))
        .unwrap_or_else(|| panic!("no COPY puts the health check at {}", check[0]));
    let source = copy.split_whitespace().nth(1).expect("COPY source");
    assert!(
        repo().join(source).is_file(),
        "the health check {source} does not exist"
    );
    // Every COPY from the context names a file that exists.
    for copy in stages
        .iter()
        .flat_map(|(_, _, i)| i)
        .filter(|i| i.starts_with("COPY ") && !i.contains("--from"))
    {
        let source = copy.split_whitespace().nth(1).expect("COPY source");
        assert!(
            repo().join(source).exists(),
            "{copy}: {source} does not exist"
        );
    }
}

/// The image's health check script: healthy on a 200 from /health on
/// CHATSTREAM_HTTP_PORT, unhealthy on anything else or nothing listening.
#[test]
fn image_health_check_reads_the_health_endpoint() {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    let script = repo().join("deploy/docker/healthcheck.sh");
    let check = |port: u16| {
        Command::new("bash")
            .arg(&script)
            .env("CHATSTREAM_HTTP_PORT", port.to_string())
            .status()
            .expect("run the health check")
            .success()
    };
    for (status, healthy) in [("200 OK", true), ("503 Service Unavailable", false)] {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            // The whole request before answering: closing a socket with
            // unread bytes resets it, and the client could lose the answer.
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let read = stream.read(&mut buffer).expect("read");
                if read == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..read]);
            }
            let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
            String::from_utf8_lossy(&request).into_owned()
        });
        assert_eq!(check(port), healthy, "a {status} answer");
        let request = server.join().expect("server");
        assert!(
            request.starts_with("GET /health "),
            "it asked for {request:?}"
        );
    }
    let unused = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    assert!(!check(unused), "healthy with nothing listening");
}

// ---------------------------------------------------------------------------
// The compose cluster.

#[test]
fn compose_runs_every_role_on_real_engines_with_a_config_the_binary_accepts() {
    let compose = yaml_to_json(&read("deploy/compose.yaml"), "deploy/compose.yaml");
    let services = compose["services"].as_object().expect("services");
    for engine in [
        "kafka",
        "scylla",
        "redis",
        "otel-collector",
        "prometheus",
        "grafana",
        "init",
    ] {
        assert!(
            services.contains_key(engine),
            "compose has no `{engine}` service"
        );
    }

    // Kafka in KRaft mode: a controller role, no ZooKeeper anywhere.
    let kafka_env = &services["kafka"]["environment"];
    assert!(
        kafka_env["KAFKA_PROCESS_ROLES"]
            .as_str()
            .unwrap_or_default()
            .contains("controller")
    );
    assert!(
        !read("deploy/compose.yaml")
            .to_lowercase()
            .contains("zookeeper")
    );

    // Every role, with replicas, started by its real subcommand, after the
    // init job and healthy engines.
    for (name, kind) in COMPONENTS {
        let service = &services[name];
        assert!(service.is_object(), "compose has no `{name}` service");
        let command: Vec<&str> = service["command"]
            .as_array()
            .expect("command list")
            .iter()
            .map(|w| w.as_str().expect("word"))
            .collect();
        assert_real_subcommand(&command, &format!("compose service {name}"));
        match kind {
            None => assert_eq!(command, ["gateway"]),
            Some(kind) => assert_eq!(command, ["processor", kind], "compose service {name}"),
        }
        let replicas = service["deploy"]["replicas"]
            .as_u64()
            .expect("deploy.replicas");
        if matches!(name, "gateway" | "projector" | "router") {
            assert!(
                replicas >= 2,
                "{name} runs {replicas} replica(s); it must show scaling out"
            );
        }
        assert_eq!(
            service["depends_on"]["init"]["condition"], "service_completed_successfully",
            "{name}"
        );
        for engine in ["kafka", "scylla", "redis"] {
            assert_eq!(
                service["depends_on"][engine]["condition"], "service_healthy",
                "{name} on {engine}"
            );
        }
        assert_eq!(
            service["read_only"], true,
            "{name}: read-only root filesystem"
        );
        assert_eq!(
            service["cap_drop"],
            json!(["ALL"]),
            "{name}: no capabilities"
        );
    }

    // The init job runs `topics create` and `schema apply`.
    let init = &services["init"];
    let script = init["command"]
        .as_array()
        .expect("init command")
        .iter()
        .map(|w| w.as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ");
    let invocations = shell_invocations(&script, "chatstream");
    let ran: Vec<String> = invocations
        .iter()
        .map(|words| words.iter().take(2).cloned().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        ran,
        ["topics create", "schema apply"],
        "the init job runs {script:?}"
    );
    for words in &invocations {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        assert_real_subcommand(&words, "the compose init job");
    }

    // Every file it mounts exists.
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let volume = volume.as_str().expect("short volume syntax");
            if let Some(local) = volume.strip_prefix("./") {
                let local = local.split(':').next().expect("source");
                assert!(
                    repo().join("deploy").join(local).exists(),
                    "{name} mounts ./{local}, which does not exist"
                );
            }
        }
    }

    // The config every role reads is one the binary's own loader accepts,
    // on the shared backends, listening where the probes and Prometheus look.
    let gateway = &services["gateway"];
    let config_path = gateway["environment"]["CHATSTREAM_CONFIG"]
        .as_str()
        .expect("CHATSTREAM_CONFIG");
    let mounted = |container_path: &str| {
        gateway["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .filter_map(Value::as_str)
            .find_map(|v| {
                let mut parts = v.split(':');
                let local = parts.next()?;
                (parts.next()? == container_path)
                    .then(|| repo().join("deploy").join(local.trim_start_matches("./")))
            })
            .unwrap_or_else(|| panic!("{container_path} is not mounted into the gateway"))
    };
    let config = load_as_in_the_image(&mounted(config_path), "deploy/compose/chatstream.yaml");
    assert_eq!(format!("{:?}", config.log.backend), "Kafka");
    assert_eq!(format!("{:?}", config.store.backend), "Scylla");
    assert!(
        config.redis.url.is_some(),
        "the compose config has no Redis"
    );
    assert_eq!(
        config.server.host, "0.0.0.0",
        "roles must listen beyond loopback in containers"
    );
    assert_eq!(u64::from(config.server.http_port), HTTP_PORT);
    assert!(
        config.kafka.bootstrap_servers.starts_with("kafka:"),
        "Kafka at {}",
        config.kafka.bootstrap_servers
    );
    assert!(
        config
            .scylla
            .nodes
            .iter()
            .all(|node| node.starts_with("scylla:"))
    );
    let gateway_ports = gateway["ports"].as_array().expect("gateway ports");
    assert!(gateway_ports.iter().any(|p| {
        p.as_str()
            .is_some_and(|p| p.ends_with(&format!(":{HTTP_PORT}")))
    }));

    // The tenants file is one the gateway accepts, and the key the smoke
    // test sends opens it.
    let tenants_path = config
        .tenants_file
        .as_deref()
        .expect("tenants_file")
        .to_string_lossy()
        .into_owned();
    let tenants =
        TenantRegistry::load(&mounted(&tenants_path)).expect("the compose tenants file loads");
    let key = read("deploy/compose/api-key");
    assert!(
        tenants.authenticate(key.trim()).is_some(),
        "deploy/compose/api-key does not open deploy/compose/tenants.yaml"
    );

    // Prometheus scrapes every role on the port that serves /metrics.
    let prometheus = yaml_to_json(&read("deploy/compose/prometheus.yml"), "prometheus.yml");
    let discovery = &prometheus["scrape_configs"][0]["dns_sd_configs"][0];
    let scraped: BTreeSet<&str> = discovery["names"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let roles: BTreeSet<&str> = COMPONENTS.iter().map(|(name, _)| *name).collect();
    assert_eq!(scraped, roles, "Prometheus scrapes {scraped:?}");
    assert_eq!(discovery["port"].as_u64(), Some(HTTP_PORT));

    // Grafana is provisioned with the dashboard.
    let grafana_volumes = services["grafana"]["volumes"].to_string();
    assert!(
        grafana_volumes.contains("chatstream-dashboard.json")
            && grafana_volumes.contains("provisioning")
    );
}

/// deploy/smoke.sh sends a message through a running platform and fails
/// when the answer does not come (here `chatstream dev`, whose mock model
/// answers the same as the compose cluster's).
#[tokio::test]
async fn smoke_script_passes_against_a_running_platform_and_fails_with_a_bad_key() {
    for tool in ["curl", "python3"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            services::not_run::<()>(format!(
                "deploy/smoke.sh needs {tool}, which is not installed"
            ));
            return;
        }
    }
    let platform = support::Platform::start(&[]).await;
    let url = format!("http://{}", platform.http_addr);
    let smoke = |key: String| {
        let url = url.clone();
        async move {
            tokio::process::Command::new(repo().join("deploy/smoke.sh"))
                .args(["--url", &url, "--api-key", &key, "--wait", "30"])
                .output()
                .await
                .expect("run deploy/smoke.sh")
        }
    };
    let passed = smoke(platform.key("acme").to_owned()).await;
    assert!(
        passed.status.success() && stdout(&passed).contains("PASS"),
        "deploy/smoke.sh failed against chatstream dev:\n{}{}",
        stdout(&passed),
        stderr(&passed)
    );
    assert!(stdout(&passed).contains("the analytics processor counted it"));
    let refused = smoke("cs_not_a_key".to_owned()).await;
    assert!(
        !refused.status.success(),
        "deploy/smoke.sh passed with a wrong key:\n{}",
        stdout(&refused)
    );
    assert!(stderr(&refused).contains("FAIL"), "{}", stderr(&refused));
    let mut platform = platform;
    platform.stop().await;
}

// ---------------------------------------------------------------------------
// The Grafana dashboard.

#[test]
fn dashboard_queries_only_metrics_the_code_exports_and_covers_the_operators_questions() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/chatstream-dashboard.json"))
        .expect("dashboard JSON");
    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let title = panel["title"].as_str().unwrap_or_default();
            used.extend(assert_metrics_exported(
                expr,
                &format!("dashboard panel {title:?}"),
            ));
        }
    }
    // Request rate, TTFT, provider call duration, lag per partition, dead
    // letters, connections, refusals.
    for needed in [
        "chatstream_gateway_messages_total",
        "gen_ai_client_operation_time_to_first_chunk_seconds",
        "gen_ai_client_operation_duration_seconds",
        "chatstream_processor_lag",
        "chatstream_processor_events_failed_total",
        "chatstream_gateway_connections",
        "chatstream_gateway_connections_refused_total",
        "chatstream_gateway_rate_limited_total",
    ] {
        assert!(used.contains(needed), "no dashboard panel shows {needed}");
    }
    assert_eq!(dashboard["uid"], "chatstream");
    // The Grafana provisioning names the folder the compose file mounts it in.
    let provider = yaml_to_json(
        &read("deploy/grafana/provisioning/dashboards/chatstream.yaml"),
        "dashboard provider",
    );
    assert_eq!(
        provider["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
}

// ---------------------------------------------------------------------------
// The Helm chart.

struct Helm {
    helm: String,
    python: String,
}

fn chart_tools() -> Option<Helm> {
    let helm = services::helm()?;
    let python = services::python_for_manifests()?;
    Some(Helm { helm, python })
}

impl Helm {
    /// `helm template` with these extra arguments; the output or the error.
    fn template(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec![
            "template",
            "chatstream",
            CHART,
            "--namespace",
            "chatstream-test",
            "--kube-version",
            KUBE_VERSION,
        ];
        all.extend_from_slice(args);
        let output = run(&self.helm, &all);
        if output.status.success() {
            Ok(stdout(&output))
        } else {
            Err(stderr(&output))
        }
    }

    /// Validates rendered manifests against the Kubernetes schemas
    /// (strict), all cases in one run of the validator (loading the
    /// schemas is most of its time); the custom resources are reported as
    /// skipped. The report of each case, in order.
    fn validate(&self, cases: &[(String, String)]) -> Vec<Value> {
        let dir = tempfile::tempdir().expect("temp dir");
        let files: Vec<String> = (0..cases.len())
            .map(|index| {
                dir.path()
                    .join(format!("case-{index}.yaml"))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        for ((_, rendered), file) in cases.iter().zip(&files) {
            std::fs::write(file, rendered).expect("write");
        }
        let script = repo()
            .join("tests/python/validate_manifests.py")
            .to_string_lossy()
            .into_owned();
        let mut args = vec![script.as_str(), "--kube-version", KUBE_VERSION];
        args.extend(files.iter().map(String::as_str));
        let output = run(&self.python, &args);
        let reports: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("the validator printed no report ({e}): {}", stderr(&output))
        });
        let reports: Vec<Value> = files.iter().map(|file| reports[file].clone()).collect();
        for ((case, _), report) in cases.iter().zip(&reports) {
            let errors = report["errors"].as_array().expect("errors");
            assert!(
                errors.is_empty(),
                "{case}: manifests fail the Kubernetes {KUBE_VERSION} schemas: {errors:#?}"
            );
            assert!(
                !report["validated"]
                    .as_array()
                    .expect("validated")
                    .is_empty(),
                "{case}: nothing validated"
            );
        }
        assert!(
            output.status.success(),
            "the validator failed: {}",
            stderr(&output)
        );
        reports
    }
}

/// The rendered documents by kind, then by name.
fn by_kind(documents: &[Value]) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut kinds: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for document in documents {
        let kind = document["kind"].as_str().expect("kind").to_owned();
        let name = document["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        let previous = kinds
            .entry(kind.clone())
            .or_default()
            .insert(name.clone(), document.clone());
        assert!(previous.is_none(), "{kind}/{name} is rendered twice");
    }
    kinds
}

fn names_of(kinds: &BTreeMap<String, BTreeMap<String, Value>>, kind: &str) -> BTreeSet<String> {
    kinds
        .get(kind)
        .map(|k| k.keys().cloned().collect())
        .unwrap_or_default()
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_some_and(|selector| {
        !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
    })
}

/// Everything the chart must hold whatever the values: checked on every
/// rendered combination.
fn check_rendering(
    case: &str,
    rendered: &str,
    report: &Value,
) -> BTreeMap<String, BTreeMap<String, Value>> {
    for skipped in report["skipped"].as_array().into_iter().flatten() {
        let skipped = skipped.as_str().unwrap_or_default();
        assert!(
            ["ServiceMonitor/", "PrometheusRule/", "ScaledObject/"]
                .iter()
                .any(|kind| skipped.starts_with(kind)),
            "{case}: only the custom resources may skip schema validation, not {skipped}"
        );
    }
    let documents = yaml_documents(rendered);
    let kinds = by_kind(&documents);

    // The rendered chatstream.yaml is one the binary accepts, on the shared backends.
    let config_map = kinds["ConfigMap"]
        .values()
        .find(|c| {
            c["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-config") && !n.contains("migrations"))
        })
        .expect("config ConfigMap");
    let dir = tempfile::tempdir().expect("temp dir");
    let config_file = dir.path().join("chatstream.yaml");
    std::fs::write(
        &config_file,
        config_map["data"]["chatstream.yaml"]
            .as_str()
            .expect("chatstream.yaml"),
    )
    .expect("write");
    let config = load_as_in_the_image(
        &config_file,
        &format!("{case}: the chart's chatstream.yaml"),
    );
    assert_eq!(format!("{:?}", config.log.backend), "Kafka", "{case}");
    assert_eq!(format!("{:?}", config.store.backend), "Scylla", "{case}");
    assert_eq!(u64::from(config.server.http_port), HTTP_PORT, "{case}");
    assert_eq!(config.server.host, "0.0.0.0", "{case}");
    let partitions = u64::from(config.log.partitions);
    let drain_seconds = config.processing.drain_timeout_ms.div_ceil(1000);

    let deployments = kinds.get("Deployment").cloned().unwrap_or_default();
    let services_ = kinds.get("Service").cloned().unwrap_or_default();
    let policies = kinds.get("NetworkPolicy").cloned().unwrap_or_default();
    let hpas = kinds
        .get("HorizontalPodAutoscaler")
        .cloned()
        .unwrap_or_default();
    let scaled = kinds.get("ScaledObject").cloned().unwrap_or_default();
    let pdbs = kinds
        .get("PodDisruptionBudget")
        .cloned()
        .unwrap_or_default();
    let accounts = names_of(&kinds, "ServiceAccount");
    for (name, deployment) in &deployments {
        let context = format!("{case}: Deployment {name}");
        let pod = &deployment["spec"]["template"]["spec"];
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        let component = labels["app.kubernetes.io/component"]
            .as_str()
            .expect("component label");
        let container = &pod["containers"][0];

        // The role's real subcommand.
        let args: Vec<&str> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_real_subcommand(&args, &context);
        let expected_kind = COMPONENTS
            .iter()
            .find(|(c, _)| *c == component)
            .expect("known component")
            .1;
        match expected_kind {
            None => assert_eq!(args, ["gateway"], "{context}"),
            Some(kind) => assert_eq!(args, ["processor", kind], "{context}"),
        }

        // Hardened: non-root, read-only root, no capabilities, no escalation.
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{context}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{context}"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{context}");
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{context}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{context}");
        assert_eq!(
            security["capabilities"]["drop"],
            json!(["ALL"]),
            "{context}"
        );

        // Probes on the port the binary serves them on.
        let http_port = container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == "http")
            .expect("http port");
        assert_eq!(
            http_port["containerPort"].as_u64(),
            Some(HTTP_PORT),
            "{context}"
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/health",
            "{context}"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/ready",
            "{context}"
        );
        assert_eq!(
            container["startupProbe"]["httpGet"]["path"], "/health",
            "{context}"
        );
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            assert_eq!(
                container[probe]["httpGet"]["port"], "http",
                "{context} {probe}"
            );
        }
        assert!(
            container["resources"]["requests"]["memory"].is_string(),
            "{context}: no memory request"
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{context}: no memory limit"
        );

        // preStop sleep, then a grace period longer than sleep + drain + stop margin.
        let command = container["lifecycle"]["preStop"]["exec"]["command"]
            .as_array()
            .expect("preStop exec");
        assert_eq!(command[0], "sleep", "{context}");
        let sleep: u64 = command[1]
            .as_str()
            .expect("seconds")
            .parse()
            .expect("seconds");
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        assert!(
            grace > sleep + drain_seconds + 5,
            "{context}: grace {grace}s is not longer than preStop {sleep}s + drain {drain_seconds}s + 5s"
        );

        // Config mounted where --config points; tenants only where read.
        let env = container["env"].as_array().expect("env");
        let config_env = env
            .iter()
            .find(|e| e["name"] == "CHATSTREAM_CONFIG")
            .expect("CHATSTREAM_CONFIG");
        let mounts = container["volumeMounts"].as_array().expect("mounts");
        assert!(
            mounts.iter().any(|m| m["mountPath"] == config_env["value"]),
            "{context}: config not mounted at {}",
            config_env["value"]
        );
        let reads_tenants = matches!(component, "gateway" | "router" | "mcp");
        let tenants_dir = Path::new(config.tenants_file.as_deref().expect("tenants_file"))
            .parent()
            .expect("dir")
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            mounts
                .iter()
                .any(|m| m["mountPath"] == tenants_dir.as_str()),
            reads_tenants,
            "{context}: tenants mount"
        );
        // Secrets by reference only: no literal secret values in env.
        for variable in env {
            let name = variable["name"].as_str().unwrap_or_default();
            if ["KEY", "TOKEN", "PASSWORD", "SECRET"]
                .iter()
                .any(|s| name.contains(s))
                || name.ends_with("REDIS_URL")
            {
                assert!(
                    variable["valueFrom"]["secretKeyRef"].is_object(),
                    "{context}: {name} is not taken from a Secret"
                );
            }
        }

        // Spread over zones and nodes, its own ServiceAccount, a PDB, a
        // NetworkPolicy and a Service selecting it.
        let spread: BTreeSet<&str> = pod["topologySpreadConstraints"]
            .as_array()
            .expect("topology spread")
            .iter()
            .filter_map(|c| c["topologyKey"].as_str())
            .collect();
        assert!(
            spread.contains("topology.kubernetes.io/zone")
                && spread.contains("kubernetes.io/hostname"),
            "{context}: spread {spread:?}"
        );
        assert!(
            accounts.contains(
                pod["serviceAccountName"]
                    .as_str()
                    .expect("serviceAccountName")
            ),
            "{context}: no ServiceAccount"
        );
        assert!(
            pdbs.values()
                .any(|p| labels_match(&p["spec"]["selector"]["matchLabels"], labels)),
            "{context}: no PodDisruptionBudget"
        );
        if kinds.contains_key("NetworkPolicy") {
            let policy = policies
                .values()
                .find(|p| labels_match(&p["spec"]["podSelector"]["matchLabels"], labels))
                .unwrap_or_else(|| panic!("{context}: no NetworkPolicy"));
            assert_eq!(
                policy["spec"]["policyTypes"],
                json!(["Ingress", "Egress"]),
                "{context}"
            );
        }
        assert!(
            services_
                .values()
                .any(|s| labels_match(&s["spec"]["selector"], labels)),
            "{context}: no Service"
        );

        // One autoscaler at most; a processor's never beyond the partitions.
        let hpa = hpas
            .values()
            .find(|h| h["spec"]["scaleTargetRef"]["name"] == name.as_str());
        let keda = scaled
            .values()
            .find(|s| s["spec"]["scaleTargetRef"]["name"] == name.as_str());
        assert!(
            !(hpa.is_some() && keda.is_some()),
            "{context}: both an HPA and a KEDA ScaledObject"
        );
        if hpa.is_some() || keda.is_some() {
            assert!(
                deployment["spec"]["replicas"].is_null(),
                "{context}: replicas fixed under an autoscaler"
            );
        }
        if let Some(hpa) = hpa {
            let max = hpa["spec"]["maxReplicas"].as_u64().expect("maxReplicas");
            if component != "gateway" {
                assert!(
                    max <= partitions,
                    "{context}: HPA max {max} > {partitions} partitions"
                );
            }
            let resources: BTreeSet<&str> = hpa["spec"]["metrics"]
                .as_array()
                .expect("metrics")
                .iter()
                .filter_map(|m| m["resource"]["name"].as_str())
                .collect();
            assert_eq!(resources, BTreeSet::from(["cpu", "memory"]), "{context}");
        }
        if let Some(keda) = keda {
            assert_ne!(
                component, "gateway",
                "{context}: KEDA scales consumer groups, not the gateway"
            );
            let max = keda["spec"]["maxReplicaCount"]
                .as_u64()
                .expect("maxReplicaCount");
            assert!(
                max <= partitions,
                "{context}: ScaledObject max {max} > {partitions} partitions"
            );
            let trigger = &keda["spec"]["triggers"][0];
            assert_eq!(trigger["type"], "kafka", "{context}");
            let metadata = &trigger["metadata"];
            assert_eq!(
                metadata["consumerGroup"].as_str(),
                Some(
                    format!(
                        "{}{}",
                        config.kafka.group_prefix,
                        expected_kind.expect("processor")
                    )
                    .as_str()
                ),
                "{context}"
            );
            assert_eq!(
                metadata["topic"].as_str(),
                Some(config.kafka.topic.as_str()),
                "{context}"
            );
            assert_eq!(
                metadata["bootstrapServers"].as_str(),
                Some(config.kafka.bootstrap_servers.as_str()),
                "{context}"
            );
            assert!(
                metadata["lagThreshold"]
                    .as_str()
                    .is_some_and(|t| t.parse::<u64>().is_ok()),
                "{context}: lagThreshold"
            );
            assert_eq!(metadata["allowIdleConsumers"], "false", "{context}");
        }
    }
    // Autoscalers and budgets point at Deployments that exist.
    for (kind, target) in [
        ("HorizontalPodAutoscaler", "/spec/scaleTargetRef/name"),
        ("ScaledObject", "/spec/scaleTargetRef/name"),
    ] {
        for (name, object) in kinds.get(kind).into_iter().flatten() {
            let target = object
                .pointer(target)
                .and_then(Value::as_str)
                .expect("target");
            assert!(
                deployments.contains_key(target),
                "{case}: {kind} {name} targets {target}, which is not rendered"
            );
        }
    }

    // Ingress paths: only routes the gateway serves (the /api/v2/model alias rewrites to /v1).
    let routes = gateway_routes();
    for (name, ingress) in kinds.get("Ingress").into_iter().flatten() {
        let annotations = &ingress["metadata"]["annotations"];
        let rewrite = annotations["nginx.ingress.kubernetes.io/rewrite-target"].as_str();
        for rule in ingress["spec"]["rules"].as_array().expect("rules") {
            for path in rule["http"]["paths"].as_array().expect("paths") {
                let backend = path["backend"]["service"]["name"]
                    .as_str()
                    .expect("backend");
                assert!(
                    services_.contains_key(backend),
                    "{case}: Ingress {name} sends to {backend}, which is not rendered"
                );
                let path = path["path"].as_str().expect("path");
                let served = match rewrite {
                    Some(target) => target.trim_end_matches("$2").to_owned(),
                    None => path.to_owned(),
                };
                assert!(
                    served == "/" || routes.iter().any(|route| route.starts_with(&served)),
                    "{case}: Ingress {name} routes {path} (to {served}), which the gateway does not serve ({routes:?})"
                );
            }
        }
        if annotations["nginx.ingress.kubernetes.io/backend-protocol"] != "GRPC" {
            for annotation in [
                "limit-rps",
                "proxy-body-size",
                "proxy-read-timeout",
                "enable-cors",
            ] {
                let key = format!("nginx.ingress.kubernetes.io/{annotation}");
                assert!(
                    annotations[&key].is_string(),
                    "{case}: Ingress {name} has no {key}"
                );
            }
        }
        assert!(
            ingress["spec"]["tls"].is_array() || case.contains("tls off"),
            "{case}: Ingress {name} without TLS"
        );
    }

    // The migrations hook: topics create, then schema apply, before install and upgrade.
    if let Some(job) = kinds.get("Job").and_then(|jobs| jobs.values().next()) {
        let hooks = job["metadata"]["annotations"]["helm.sh/hook"]
            .as_str()
            .expect("hook");
        assert_eq!(hooks, "pre-install,pre-upgrade", "{case}");
        let pod = &job["spec"]["template"]["spec"];
        let steps: Vec<Vec<&str>> = pod["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(pod["containers"].as_array().expect("containers"))
            .map(|c| {
                c["args"]
                    .as_array()
                    .expect("args")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect()
            })
            .collect();
        assert_eq!(
            steps,
            [vec!["topics", "create"], vec!["schema", "apply"]],
            "{case}"
        );
        for step in &steps {
            assert_real_subcommand(step, &format!("{case}: migrations Job"));
        }
        // Its ServiceAccount and config exist before it runs: hooks too, with a lower weight.
        let account = pod["serviceAccountName"]
            .as_str()
            .expect("serviceAccountName");
        let hook_account = &kinds["ServiceAccount"][account];
        assert!(
            hook_account["metadata"]["annotations"]["helm.sh/hook"]
                .as_str()
                .is_some_and(|h| h.contains("pre-install")),
            "{case}: the Job's ServiceAccount is not a hook"
        );
    }

    // Custom resources, checked by structure (no Kubernetes schema has them).
    for (name, monitor) in kinds.get("ServiceMonitor").into_iter().flatten() {
        let selector = &monitor["spec"]["selector"]["matchLabels"];
        let selected: Vec<&Value> = services_
            .values()
            .filter(|s| labels_match(selector, &s["metadata"]["labels"]))
            .collect();
        assert!(
            !selected.is_empty(),
            "{case}: ServiceMonitor {name} selects no Service"
        );
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(endpoint["path"], "/metrics", "{case}");
        for service in selected {
            assert!(
                service["spec"]["ports"]
                    .as_array()
                    .expect("ports")
                    .iter()
                    .any(|p| p["name"] == endpoint["port"]),
                "{case}: ServiceMonitor port {} not on {}",
                endpoint["port"],
                service["metadata"]["name"]
            );
        }
    }
    for (name, rule) in kinds.get("PrometheusRule").into_iter().flatten() {
        let mut alerts = BTreeSet::new();
        for group in rule["spec"]["groups"].as_array().expect("groups") {
            assert!(
                group["name"].is_string(),
                "{case}: PrometheusRule {name}: unnamed group"
            );
            for rule in group["rules"].as_array().expect("rules") {
                let alert = rule["alert"].as_str().expect("alert name");
                let expr = rule["expr"].as_str().expect("expr");
                assert!(
                    rule["labels"]["severity"].is_string(),
                    "{case}: {alert} has no severity"
                );
                assert!(
                    rule["annotations"]["summary"].is_string()
                        && rule["annotations"]["description"].is_string(),
                    "{case}: {alert}"
                );
                if let Some(duration) = rule["for"].as_str() {
                    assert!(
                        duration
                            .trim_end_matches(['s', 'm', 'h'])
                            .parse::<u32>()
                            .is_ok(),
                        "{case}: {alert} for {duration}"
                    );
                }
                assert_metrics_exported(expr, &format!("{case}: alert {alert}"));
                assert_eq!(
                    expr.matches('(').count(),
                    expr.matches(')').count(),
                    "{case}: {alert}: unbalanced ( ): {expr}"
                );
                alerts.insert(alert.to_owned());
            }
        }
        for needed in [
            "ChatstreamConsumerLagHigh",
            "ChatstreamModelErrorRate",
            "ChatstreamTimeToFirstTokenHigh",
            "ChatstreamDeadLetters",
        ] {
            assert!(alerts.contains(needed), "{case}: no {needed} alert");
        }
        // Every alert is explained in docs/operations.md.
        let operations = read("docs/operations.md");
        for alert in &alerts {
            assert!(
                operations.contains(&format!("### {alert}")),
                "docs/operations.md does not explain {alert}"
            );
        }
    }
    if let Some(dashboard) = kinds.get("ConfigMap").and_then(|c| {
        c.values()
            .find(|c| c["data"]["chatstream-dashboard.json"].is_string())
    }) {
        assert_eq!(
            dashboard["data"]["chatstream-dashboard.json"]
                .as_str()
                .map(str::trim),
            Some(read("deploy/grafana/chatstream-dashboard.json").trim()),
            "{case}: the chart's dashboard differs from deploy/grafana's"
        );
    }
    kinds
}

fn deployment_components(kinds: &BTreeMap<String, BTreeMap<String, Value>>) -> BTreeSet<String> {
    kinds
        .get("Deployment")
        .into_iter()
        .flatten()
        .filter_map(|(_, d)| {
            d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"].as_str()
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn helm_chart_renders_valid_manifests_for_both_environments_and_every_option() {
    let Some(tools) = chart_tools() else { return };
    let staging = format!("{CHART}/values-staging.yaml");
    let production = format!("{CHART}/values-production.yaml");

    // helm lint: the defaults and both environments.
    for values in [None, Some(&staging), Some(&production)] {
        let mut args = vec!["lint", CHART, "--strict", "--kube-version", KUBE_VERSION];
        if let Some(values) = values {
            args.extend(["-f", values]);
        }
        let output = run(&tools.helm, &args);
        assert!(
            output.status.success(),
            "helm {}:\n{}{}",
            args.join(" "),
            stdout(&output),
            stderr(&output)
        );
    }

    let all: BTreeSet<String> = COMPONENTS.iter().map(|(c, _)| c.to_string()).collect();
    let mut cases: Vec<(String, Vec<String>)> = vec![
        ("defaults".into(), vec![]),
        ("staging".into(), vec!["-f".into(), staging.clone()]),
        ("production".into(), vec!["-f".into(), production.clone()]),
        ("production, both colors, green active".into(), vec!["-f".into(), production.clone(), "--set".into(), "blueGreen.colors.green.enabled=true,blueGreen.colors.green.tag=9.9.9,blueGreen.activeColor=green".into()]),
        ("KEDA off everywhere".into(), ["projector", "router", "mcp", "analytics"].iter().flat_map(|c| ["--set".to_owned(), format!("components.{c}.autoscaling.mode=hpa")]).collect()),
        ("KEDA on every processor".into(), ["projector", "router", "mcp", "analytics"].iter().flat_map(|c| ["--set".to_owned(), format!("components.{c}.autoscaling.mode=keda")]).collect()),
        ("no autoscalers".into(), ["gateway", "projector", "router", "mcp", "analytics"].iter().flat_map(|c| ["--set".to_owned(), format!("components.{c}.autoscaling.mode=none")]).collect()),
        ("KEDA beyond the partitions".into(), vec!["--set".into(), "components.router.autoscaling.mode=keda,components.router.autoscaling.maxReplicas=500,config.log.partitions=4".into()]),
        ("ingress off".into(), vec!["--set".into(), "ingress.enabled=false".into()]),
        ("ingress on, tls off, grpc on, no alias".into(), vec!["--set".into(), "ingress.tls.enabled=false,ingress.grpc.enabled=true,ingress.modelAlias.enabled=false".into()]),
        ("monitoring on".into(), vec!["--set".into(), "monitoring.serviceMonitor.enabled=true,monitoring.prometheusRules.enabled=true".into()]),
        ("network policies and migrations off".into(), vec!["--set".into(), "networkPolicy.enabled=false,migrations.enabled=false".into()]),
        ("otel and secrets".into(), vec!["--set".into(), "otel.endpoint=http://collector:4317,secrets.redisUrl.name=redis-auth".into(), "--set-json".into(), r#"secrets.env=[{"name":"OPENAI_API_KEY","secretName":"providers","secretKey":"openai"}]"#.into(), "--set-json".into(), r#"networkPolicy.gatewayClients=[{"podSelector":{"matchLabels":{"app":"loadtest"}}}]"#.into()]),
        ("group prefix".into(), vec!["-f".into(), production.clone(), "--set".into(), "config.kafka.group_prefix=eu-".into()]),
    ];
    for (component, _) in COMPONENTS {
        cases.push((
            format!("{component} disabled"),
            vec![
                "--set".into(),
                format!("components.{component}.enabled=false"),
            ],
        ));
    }

    // Rendered side by side: each helm run is mostly start-up.
    let rendered: Vec<(String, String)> = std::thread::scope(|scope| {
        let renders: Vec<_> = cases
            .iter()
            .map(|(case, args)| {
                let tools = &tools;
                scope.spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let rendered = tools
                        .template(&args)
                        .unwrap_or_else(|e| panic!("{case}: helm template failed: {e}"));
                    (case.clone(), rendered)
                })
            })
            .collect();
        renders
            .into_iter()
            .map(|render| render.join().expect("render"))
            .collect()
    });
    let reports = tools.validate(&rendered);
    let mut rendered_kinds = BTreeSet::new();
    for ((case, rendered), report) in rendered.iter().zip(&reports) {
        let kinds = check_rendering(case, rendered, report);
        rendered_kinds.extend(kinds.keys().cloned());
        let components = deployment_components(&kinds);
        match case.strip_suffix(" disabled") {
            Some(disabled) => {
                assert!(!components.contains(disabled), "{case}: still rendered");
                let mut rest = all.clone();
                rest.remove(disabled);
                assert_eq!(components, rest, "{case}");
            }
            None => assert_eq!(components, all, "{case}"),
        }
        let scaled = names_of(&kinds, "ScaledObject").len();
        let processor_hpas = names_of(&kinds, "HorizontalPodAutoscaler")
            .iter()
            .filter(|n| !n.contains("-gateway"))
            .count();
        match case.as_str() {
            "KEDA off everywhere" => assert_eq!((scaled, processor_hpas), (0, 4), "{case}"),
            "KEDA on every processor" => assert_eq!((scaled, processor_hpas), (4, 0), "{case}"),
            "no autoscalers" => assert!(
                !kinds.contains_key("HorizontalPodAutoscaler") && scaled == 0,
                "{case}"
            ),
            "KEDA beyond the partitions" => {
                let router = kinds["ScaledObject"].values().next().expect("ScaledObject");
                assert_eq!(
                    router["spec"]["maxReplicaCount"], 4,
                    "{case}: not capped at the partition count"
                );
            }
            "ingress off" => assert!(!kinds.contains_key("Ingress"), "{case}"),
            "network policies and migrations off" => assert!(
                !kinds.contains_key("NetworkPolicy") && !kinds.contains_key("Job"),
                "{case}"
            ),
            "monitoring on" => assert!(
                kinds.contains_key("ServiceMonitor") && kinds.contains_key("PrometheusRule"),
                "{case}"
            ),
            "production" => {
                assert_eq!(
                    names_of(&kinds, "Deployment")
                        .iter()
                        .filter(|n| n.contains("-gateway-"))
                        .count(),
                    1,
                    "{case}: one color"
                );
                assert!(
                    scaled >= 1 && kinds.contains_key("ServiceMonitor"),
                    "{case}"
                );
            }
            "production, both colors, green active" => {
                let gateways: Vec<String> = names_of(&kinds, "Deployment")
                    .into_iter()
                    .filter(|n| n.contains("-gateway-"))
                    .collect();
                assert_eq!(gateways.len(), 2, "{case}: {gateways:?}");
                let main = kinds["Service"]
                    .values()
                    .find(|s| s["metadata"]["name"] == "chatstream-gateway")
                    .expect("gateway Service");
                assert_eq!(
                    main["spec"]["selector"]["chatstream.io/color"], "green",
                    "{case}"
                );
                let green = &kinds["Deployment"]["chatstream-gateway-green"];
                assert!(
                    green["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .is_some_and(|i| i.ends_with(":9.9.9")),
                    "{case}"
                );
            }
            "otel and secrets" => {
                let env_of = |deployment: &str| {
                    kinds["Deployment"][deployment]["spec"]["template"]["spec"]["containers"][0]["env"].clone()
                };
                for (component, _) in COMPONENTS {
                    let env = env_of(&format!("chatstream-{component}"));
                    let by_name = |name: &str| {
                        env.as_array()
                            .expect("env")
                            .iter()
                            .find(|e| e["name"] == name)
                            .cloned()
                    };
                    assert_eq!(
                        by_name("CHATSTREAM_REDIS_URL").expect("CHATSTREAM_REDIS_URL")["valueFrom"]
                            ["secretKeyRef"]["name"],
                        "redis-auth",
                        "{case}: {component}"
                    );
                    assert_eq!(
                        by_name("OTEL_EXPORTER_OTLP_ENDPOINT")
                            .expect("OTEL_EXPORTER_OTLP_ENDPOINT")["value"],
                        "http://collector:4317",
                        "{case}: {component}"
                    );
                    // Provider keys go to the router only.
                    assert_eq!(
                        by_name("OPENAI_API_KEY").is_some(),
                        component == "router",
                        "{case}: {component}"
                    );
                }
                let gateway_policy = kinds["NetworkPolicy"]["chatstream-gateway"].to_string();
                assert!(
                    gateway_policy.contains("loadtest"),
                    "{case}: gatewayClients not admitted"
                );
                assert!(
                    gateway_policy.contains("4317"),
                    "{case}: no egress to the OTLP collector"
                );
            }
            "group prefix" => {
                let groups: BTreeSet<&str> = kinds["ScaledObject"]
                    .values()
                    .filter_map(|s| s["spec"]["triggers"][0]["metadata"]["consumerGroup"].as_str())
                    .collect();
                assert!(
                    groups.iter().all(|g| g.starts_with("eu-")),
                    "{case}: {groups:?}"
                );
            }
            _ => {}
        }
    }
    for kind in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "NetworkPolicy",
        "Ingress",
        "ConfigMap",
        "ServiceMonitor",
        "PrometheusRule",
        "Job",
    ] {
        assert!(rendered_kinds.contains(kind), "no case rendered a {kind}");
    }
}

#[test]
fn bad_values_fail_the_chart_before_anything_is_applied() {
    let Some(tools) = chart_tools() else { return };
    let cases: [(&str, &str); 14] = [
        (
            "components.gateway.autoscaling.mode=keda",
            "/components/gateway/autoscaling/mode",
        ),
        (
            "components.router.autoscaling.mode=both",
            "/components/router/autoscaling/mode",
        ),
        (
            "components.router.processor=routr",
            "/components/router/processor",
        ),
        ("config.log.partitions=0", "/config/log/partitions"),
        ("config.server.http_port=9000", "server"),
        ("config.log_format=xml", "/config/log_format"),
        ("config.colour=blue", "colour"),
        (
            "securityContext.readOnlyRootFilesystem=false",
            "/securityContext/readOnlyRootFilesystem",
        ),
        (
            "podSecurityContext.runAsNonRoot=false",
            "/podSecurityContext/runAsNonRoot",
        ),
        ("image.digest=latest", "/image/digest"),
        (
            "components.gateway.replicas=many",
            "/components/gateway/replicas",
        ),
        ("ingress.host=Not_A_Host", "/ingress/host"),
        (
            "components.gateway.terminationGracePeriodSeconds=20",
            "must be longer than",
        ),
        (
            "blueGreen.enabled=true,blueGreen.activeColor=green",
            "would route to nothing",
        ),
    ];
    for (set, expected) in cases {
        match tools.template(&["--set", set]) {
            Ok(_) => panic!("helm template --set {set} rendered; it must fail"),
            Err(error) => assert!(
                error.contains(expected),
                "--set {set} failed, but not on {expected}: {error}"
            ),
        }
    }
    // A bad values file fails too, and so does a missing required secret name.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "secrets:\n  tenants:\n    name: \"\"\n    key: tenants.yaml\n",
    )
    .expect("write");
    let error = tools
        .template(&["-f", &file.to_string_lossy()])
        .expect_err("an empty tenants Secret name renders");
    assert!(error.contains("/secrets/tenants/name"), "{error}");
}

// ---------------------------------------------------------------------------
// The CI/CD workflow and scripts/deploy.sh.

/// Checks a shell text's `chatstream`, load tester and helm invocations and
/// the repository paths it names; returns the `chatstream` invocations.
fn check_shell(text: &str, context: &str, helm: Option<&str>) -> Vec<Vec<String>> {
    let invocations = shell_invocations(text, "chatstream");
    for words in &invocations {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        assert_real_subcommand(&words, context);
    }
    let flags = loadtest_flags();
    for words in shell_invocations(text, "chatstream-loadtest") {
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            let flag = flag.split('=').next().unwrap_or(flag);
            assert!(
                flags.contains(flag),
                "{context}: the load tester has no {flag} (it has {flags:?})"
            );
        }
    }
    if let Some(helm) = helm {
        for words in shell_invocations(text, "helm") {
            let subcommand: Vec<&str> = words
                .iter()
                .map(String::as_str)
                .take_while(|w| !w.starts_with('-') && !w.starts_with('"') && !w.starts_with('$'))
                .take(2)
                .collect();
            if subcommand.is_empty() {
                continue;
            }
            let sub = if subcommand.first() == Some(&"get") {
                subcommand.clone()
            } else {
                subcommand[..1].to_vec()
            };
            let mut args = sub.clone();
            args.push("--help");
            let help = stdout(&run(helm, &args));
            assert!(
                help.contains("Usage:"),
                "{context}: `helm {}` is not a helm command",
                sub.join(" ")
            );
            for flag in words.iter().filter(|w| w.starts_with("--")) {
                let flag = flag.split('=').next().unwrap_or(flag);
                assert!(
                    help.contains(&format!("{flag} "))
                        || help.contains(&format!("{flag}="))
                        || help.contains(&format!("{flag}[")),
                    "{context}: `helm {}` has no {flag}",
                    sub.join(" ")
                );
            }
        }
    }
    assert_paths_exist(text, context);
    invocations
}

#[test]
fn workflow_has_the_pipeline_and_calls_only_commands_that_exist() {
    let text = read(".github/workflows/ci-cd.yml");
    let workflow = yaml_to_json(&text, "ci-cd.yml");
    let jobs = workflow["jobs"].as_object().expect("jobs");
    let needs = |job: &str| -> BTreeSet<String> {
        match &jobs[job]["needs"] {
            Value::String(one) => BTreeSet::from([one.clone()]),
            Value::Array(many) => many
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => BTreeSet::new(),
        }
    };
    for job in [
        "lint",
        "audit",
        "test",
        "image",
        "scan",
        "sign",
        "deploy-staging",
        "deploy-production",
    ] {
        assert!(jobs.contains_key(job), "the workflow has no `{job}` job");
    }
    // The order of the pipeline: nothing ships untested, unscanned or unsigned,
    // and production comes after staging.
    assert!(needs("image").is_superset(&BTreeSet::from([
        "lint".into(),
        "audit".into(),
        "test".into()
    ])));
    assert!(needs("scan").contains("image"));
    assert!(needs("sign").contains("scan"));
    assert!(needs("deploy-staging").contains("sign"));
    assert!(needs("deploy-production").contains("deploy-staging"));
    assert_eq!(jobs["deploy-production"]["environment"], "production");
    assert!(
        jobs["image"]["if"]
            .as_str()
            .is_some_and(|c| c.contains("refs/tags/v")),
        "images are built per version tag"
    );

    // The steps' commands.
    let mut runs = String::new();
    let mut uses = BTreeSet::new();
    for (name, job) in jobs {
        for step in job["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("job {name} has no steps"))
        {
            if let Some(script) = step["run"].as_str() {
                runs.push_str(script);
                runs.push('\n');
            }
            if let Some(action) = step["uses"].as_str() {
                assert!(
                    action.contains('@'),
                    "{name}: {action} is not pinned to a version"
                );
                uses.insert(action.split('@').next().unwrap_or(action).to_owned());
            }
        }
    }
    for needed in [
        "cargo fmt --all -- --check",
        "cargo clippy",
        "cargo audit",
        "scripts/test.sh",
        "cosign sign",
        "scripts/deploy.sh staging",
        "scripts/deploy.sh production",
    ] {
        assert!(runs.contains(needed), "no workflow step runs `{needed}`");
    }
    for action in [
        "docker/build-push-action",
        "aquasecurity/trivy-action",
        "sigstore/cosign-installer",
    ] {
        assert!(uses.contains(action), "the workflow does not use {action}");
    }
    check_shell(
        &runs,
        "the workflow",
        services::env("CHATSTREAM_TEST_HELM").as_deref(),
    );
    // The image it builds is the Dockerfile here.
    let build = jobs["image"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("docker/build-push-action"))
        })
        .expect("build step");
    let dockerfile = build["with"]["file"].as_str().expect("file");
    assert!(
        repo().join(dockerfile).is_file(),
        "the workflow builds {dockerfile}, which does not exist"
    );
    // Scripts it runs are executable.
    for script in ["scripts/test.sh", "scripts/deploy.sh", "deploy/smoke.sh"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(repo().join(script))
            .expect(script)
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{script} is not executable");
    }
}

#[test]
fn deploy_script_dry_run_prints_the_pipelines_steps_with_real_commands() {
    let helm = services::env("CHATSTREAM_TEST_HELM");
    let script = read("scripts/deploy.sh");
    check_shell(&script, "scripts/deploy.sh", None);
    for (environment, must) in [
        (
            "staging",
            vec![
                "helm lint deploy/helm/chatstream -f deploy/helm/chatstream/values-staging.yaml",
                "helm upgrade --install chatstream deploy/helm/chatstream -n chatstream-staging",
                "deploy/smoke.sh --url",
            ],
        ),
        (
            "production",
            vec![
                "cosign verify ghcr.io/chatstream/chatstream@sha256:",
                "blueGreen.colors.green.enabled=true",
                "rollout status deployment/chatstream-gateway-green",
                "port-forward svc/chatstream-gateway-green",
                "chatstream-loadtest --transport ws",
                "--gate-metric ack --max-p99-ms 250",
                "--gate-metric ttft --max-p99-ms 3000",
                "--set blueGreen.activeColor=green",
                "blueGreen.colors.blue.enabled=false",
            ],
        ),
    ] {
        let mut command = Command::new(repo().join("scripts/deploy.sh"));
        command
            .args([environment, "1.4.0", "--dry-run"])
            .current_dir(repo())
            .env_remove("KUBE_CONTEXT");
        if environment == "production" {
            command.env(
                "CHATSTREAM_IMAGE_DIGEST",
                format!("sha256:{}", "a".repeat(64)),
            );
        }
        let output = command.output().expect("run scripts/deploy.sh");
        let printed = stdout(&output);
        assert!(
            output.status.success(),
            "scripts/deploy.sh {environment} 1.4.0 --dry-run failed:\n{printed}{}",
            stderr(&output)
        );
        for needed in must {
            assert!(
                printed.contains(needed),
                "the {environment} dry run does not run `{needed}`:\n{printed}"
            );
        }
        // The smoke test asks a model the environment's values offer.
        let values = yaml_to_json(
            &read(&format!("{CHART}/values-{environment}.yaml")),
            "values",
        );
        let model = printed
            .split("--model ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("--model");
        assert!(
            values["config"]["models"]["catalog"][model].is_object(),
            "the {environment} smoke test asks {model}, which values-{environment}.yaml does not offer"
        );
        // Each helm upgrade it prints renders: its values pass the schema and
        // the chart (the same arguments, given to `helm template`).
        if let Some(helm) = helm.as_deref() {
            for line in printed
                .lines()
                .filter_map(|l| l.strip_prefix("+ helm upgrade --install "))
            {
                let words: Vec<String> = line
                    .replace('\\', "")
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                let mut args: Vec<String> = vec![
                    "template".into(),
                    words[0].clone(),
                    words[1].clone(),
                    "--kube-version".into(),
                    KUBE_VERSION.into(),
                ];
                let mut rest = words[2..].iter();
                while let Some(word) = rest.next() {
                    match word.as_str() {
                        "--wait" | "--wait-for-jobs" | "--create-namespace" => {}
                        "--timeout" | "--history-max" => {
                            rest.next();
                        }
                        _ => args.push(word.clone()),
                    }
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let output = run(helm, &args);
                assert!(
                    output.status.success(),
                    "the {environment} dry run's `helm upgrade --install {line}` does not render: {}",
                    stderr(&output)
                );
                if line.contains("blueGreen.activeColor=green") {
                    let documents = yaml_documents(&stdout(&output));
                    let main = documents
                        .iter()
                        .find(|d| {
                            d["kind"] == "Service" && d["metadata"]["name"] == "chatstream-gateway"
                        })
                        .expect("gateway Service");
                    assert_eq!(
                        main["spec"]["selector"]["chatstream.io/color"], "green",
                        "{line}"
                    );
                    let green = documents
                        .iter()
                        .find(|d| {
                            d["kind"] == "Deployment"
                                && d["metadata"]["name"] == "chatstream-gateway-green"
                        })
                        .expect("green gateways");
                    let image = green["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .expect("image");
                    assert!(
                        image.ends_with(&format!("@sha256:{}", "a".repeat(64))),
                        "the new color runs {image}, not the signed digest"
                    );
                }
            }
        }
        // Everything it prints is a real command with real flags and paths.
        let printed_commands: String = printed
            .lines()
            .filter_map(|line| line.strip_prefix("+ "))
            .map(|line| format!("{}\n", line.replace('\\', "")))
            .collect();
        check_shell(
            &printed_commands,
            &format!("scripts/deploy.sh {environment} --dry-run"),
            helm.as_deref(),
        );
    }
    // Bad arguments are refused before anything runs.
    for args in [
        vec!["qa", "1.4.0", "--dry-run"],
        vec!["staging", "latest", "--dry-run"],
        vec!["staging"],
    ] {
        let output = run(&repo().join("scripts/deploy.sh").to_string_lossy(), &args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "scripts/deploy.sh {} did not refuse",
            args.join(" ")
        );
    }
}
