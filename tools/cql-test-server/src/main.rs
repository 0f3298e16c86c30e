//! Test support: serves the in-memory `kassandra` CQL engine (protocol v4)
//! on a TCP port, so the ScyllaDB projection store's tests have a real CQL
//! peer where no ScyllaDB or Cassandra can be installed. It is not a
//! database: data lives in memory, and several CQL features are missing
//! (see shared/SERVICES.md); the tests that need them run against a real
//! ScyllaDB instead.
//!
//! `cql-test-server --listen 127.0.0.1:0` prints `listening on ADDRESS` as
//! its first line of stdout, then serves until killed.
use std::io::Write;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use kassandra::KassandraSession;
use kassandra::error::DbError;
use kassandra::frame::request::{Request, RequestOpcode};
use kassandra::frame::response::Response;
use kassandra::frame::response::error::Error as CqlError;
use kassandra::frame::response::result::QueryResult;
use kassandra::frame::{FrameParams, request_stream, response_sink};
use tokio::io::BufWriter;
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(about = "An in-memory CQL server (kassandra) for chatstream's tests")]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9042")]
    listen: SocketAddr,
}

/// One engine for every connection: what one client writes, another reads.
type SharedEngine = Arc<Mutex<KassandraSession>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    // The first line tells a script which port it got.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {address}")?;
    stdout.flush()?;

    let engine: SharedEngine = Arc::new(Mutex::new(KassandraSession::new()));
    loop {
        let (socket, peer) = listener.accept().await?;
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            if let Err(error) = serve_connection(socket, engine).await {
                eprintln!("connection from {peer} ended: {error:#}");
            }
        });
    }
}

/// Answers the connection's requests in order until it closes.
async fn serve_connection(socket: TcpStream, engine: SharedEngine) -> anyhow::Result<()> {
    socket.set_nodelay(true)?;
    let (reader, writer) = socket.into_split();
    let mut requests = std::pin::pin!(request_stream(reader));
    let mut responses = std::pin::pin!(response_sink(BufWriter::new(writer)));
    // `USE ks` belongs to the connection, but the engine is shared.
    let mut keyspace: Option<String> = None;
    while let Some(frame) = requests.next().await {
        let (params, opcode, body) = frame.map_err(|error| anyhow::anyhow!("{error}"))?;
        let response = answer(&engine, &mut keyspace, params, opcode, &body);
        responses
            .send((response, params.stream))
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    Ok(())
}

fn answer(
    engine: &SharedEngine,
    keyspace: &mut Option<String>,
    params: FrameParams,
    opcode: RequestOpcode,
    body: &[u8],
) -> Response {
    if params.version.is_unsupported() {
        // Drivers downgrade to v4 on this error.
        return Response::unsupported_version();
    }
    // The engine panics on some statements it lacks (e.g. counters): answer
    // with a server error instead of dropping every connection.
    catch_unwind(AssertUnwindSafe(|| {
        let request = match Request::deserialize(opcode, body, params.flags) {
            Ok(request) => request,
            Err(error) => return Response::Error(error),
        };
        let mut session = engine.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(keyspace) = keyspace.as_deref() {
            session.use_keyspace(keyspace);
        }
        let result = match request {
            Request::StartUp(_) | Request::Register { .. } => return Response::Ready,
            Request::Options => return Response::options(),
            Request::AuthResponse => {
                return Response::Error(CqlError::new(
                    DbError::ProtocolError,
                    "authentication is not supported",
                ));
            }
            Request::Query(query) => session.process(query),
            Request::Prepare(query) => session.prepare(query),
            Request::Execute(execute) => session.execute(execute),
            Request::Batch(batch) => session.process_batch(batch),
        };
        if let Ok(QueryResult::SetKeyspace(set)) = &result {
            *keyspace = Some(set.keyspace_name.clone());
        }
        match result {
            Ok(result) => Response::Result(result),
            Err(error) => Response::Error(error),
        }
    }))
    .unwrap_or_else(|_| {
        Response::Error(CqlError::new(
            DbError::ServerError,
            "the test server cannot run this statement",
        ))
    })
}
