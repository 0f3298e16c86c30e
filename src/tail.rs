//! `chatstream tail`: the events on the log, from either backend, one line
//! each: a readable summary, or with `--json` JSON Lines of
//! `{"partition", "offset", "event"}` (the event in its JSON mapping, as
//! the APIs and `docs/topics.md` show it). Reads up to the log's current
//! end, partition by partition; `--follow` then waits for more. Like every
//! consumer, it sees what the log holds: a redelivered output appears again
//! with the same `id` (see `docs/topics.md`).
use std::time::Duration;

use anyhow::Context;
use chatstream_core::analytics::query::parse_time;
use chatstream_core::log::{EventLog, LogRecord, partition_for_key};
use chatstream_schemas::Event;
use chatstream_schemas::codec;
use chatstream_schemas::ws::EventJson;
use clap::Args;
use serde_json::json;

use crate::{ConfigFile, backends};

/// Records read per request.
const PAGE: usize = 512;
/// How often `--follow` looks for new records.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    config: ConfigFile,
    /// Only this tenant's events (and only its partition is read).
    #[arg(long)]
    tenant: Option<String>,
    /// Only this conversation's events.
    #[arg(long)]
    conversation: Option<String>,
    /// Where to start: an offset (in each partition read), or a time (RFC
    /// 3339): events that occurred at or after it.
    #[arg(long)]
    from: Option<String>,
    /// Keep waiting for new events (stop with Ctrl-C).
    #[arg(long)]
    follow: bool,
    /// JSON Lines instead of a readable line per event.
    #[arg(long)]
    json: bool,
    /// Directory of the embedded log (default: the config's data dir).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Offset(u64),
    /// Unix milliseconds: events that occurred at or after.
    Time(i64),
}

fn parse_start(text: &str) -> anyhow::Result<Start> {
    if let Ok(offset) = text.parse::<u64>() {
        return Ok(Start::Offset(offset));
    }
    parse_time(text)
        .map(Start::Time)
        .map_err(|_| anyhow::anyhow!("--from `{text}` is neither an offset nor an RFC 3339 time"))
}

/// What the flags let through.
struct Filter {
    tenant: Option<String>,
    conversation: Option<String>,
    since_ms: Option<i64>,
}

impl Filter {
    fn admits(&self, event: &Event) -> bool {
        let occurred_ms = event
            .occurred_at
            .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
            .unwrap_or_default();
        self.tenant.as_ref().is_none_or(|t| *t == event.tenant_id)
            && self
                .conversation
                .as_ref()
                .is_none_or(|c| *c == event.conversation_id)
            && self.since_ms.is_none_or(|since| occurred_ms >= since)
    }
}

/// The line of one record, or `None` when the filter keeps it out.
fn line(record: &LogRecord, filter: &Filter, json: bool) -> Option<String> {
    let position = record.position;
    let event = match codec::decode(&record.value) {
        Ok(event) => event,
        Err(error) => {
            eprintln!(
                "{}:{}: not a chatstream event: {error}",
                position.partition, position.offset
            );
            return None;
        }
    };
    if !filter.admits(&event) {
        return None;
    }
    if json {
        let event = EventJson::from_event(&event)?;
        return Some(
            json!({ "partition": position.partition, "offset": position.offset, "event": event })
                .to_string(),
        );
    }
    Some(format!(
        "{}:{}  {}  {}  {}  {}",
        position.partition,
        position.offset,
        event.occurred_at.map(|t| t.to_string()).unwrap_or_default(),
        event.tenant_id,
        event.conversation_id,
        event.r#type
    ))
}

pub fn run(args: TailArgs) -> anyhow::Result<()> {
    let config = args.config.load(|config| {
        if let Some(dir) = &args.data_dir {
            config.data_dir = dir.clone();
        }
    })?;
    let start = args.from.as_deref().map(parse_start).transpose()?;
    let filter = Filter {
        tenant: args.tenant.clone(),
        conversation: args.conversation.clone(),
        since_ms: match start {
            Some(Start::Time(ms)) => Some(ms),
            _ => None,
        },
    };
    let partitions: Vec<u32> = match &args.tenant {
        Some(tenant) => vec![partition_for_key(tenant, config.log.partitions)],
        None => (0..config.log.partitions).collect(),
    };
    let first_offset = match start {
        Some(Start::Offset(offset)) => offset,
        _ => 0,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let log = backends::open_log(&config, &config.data_dir).await?;
        let mut next: Vec<u64> = vec![first_offset; partitions.len()];
        loop {
            for (partition, next) in partitions.iter().zip(next.iter_mut()) {
                *next =
                    print_partition(log.as_ref(), *partition, *next, &filter, args.json).await?;
            }
            if !args.follow {
                return anyhow::Ok(());
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            }
        }
    })
}

/// Prints `partition` from `from` to its current end; returns where it stopped.
async fn print_partition(
    log: &dyn EventLog,
    partition: u32,
    mut from: u64,
    filter: &Filter,
    json: bool,
) -> anyhow::Result<u64> {
    loop {
        let records = log
            .read(partition, from, PAGE)
            .await
            .with_context(|| format!("cannot read partition {partition}"))?;
        let Some(last) = records.last() else {
            return Ok(from);
        };
        from = last.position.offset + 1;
        for record in &records {
            if let Some(line) = line(record, filter, json) {
                println!("{line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_is_an_offset_or_a_time() {
        assert_eq!(parse_start("42").unwrap(), Start::Offset(42));
        assert_eq!(
            parse_start("2026-12-02T00:00:00Z").unwrap(),
            Start::Time(1_796_169_600_000)
        );
        assert!(parse_start("yesterday").is_err());
    }
}
