#!/usr/bin/env python3
"""Tokens in and out per model for one tenant, computed from chatstream's
event topic by an outside consumer, the way docs/topics.md tells one to:
read every partition from the beginning, keep the tenant's records (key =
tenant id), deduplicate by event id, count each turn step's usage once.
The analytics API (GET /api/v2/analytics/usage?group_by=model) gives the
same figures: see README.md beside this file."""

import argparse
import importlib
import importlib.resources
import json
import os
import sys
import tempfile
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

HERE = Path(__file__).resolve().parent
DEFAULT_PROTO_DIR = HERE.parent.parent / "proto"
EVENTS_PROTO = "chatstream/events/v1/events.proto"


def load_event_class(proto_dir):
    """Generates the Python classes of events.proto into a temp dir and
    returns the `Event` message class."""
    from grpc_tools import protoc

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory(prefix="chatstream-events-pb2-") as out:
        status = protoc.main(
            [
                "protoc",
                f"-I{proto_dir}",
                f"-I{well_known}",
                f"--python_out={out}",
                str(Path(proto_dir) / EVENTS_PROTO),
            ]
        )
        if status != 0:
            sys.exit(f"protoc could not compile {Path(proto_dir) / EVENTS_PROTO}")
        sys.path.insert(0, out)
        try:
            # Once imported, the module no longer needs its file.
            return importlib.import_module("chatstream.events.v1.events_pb2").Event
        finally:
            sys.path.remove(out)


def read_tenant_events(consumer, topic, tenant, decode, timeout):
    """Every event of `tenant` on `topic` up to the end each partition had
    when reading started, each id once (the first record of an id wins).
    Returns the events and how many records did not decode."""
    metadata = consumer.list_topics(topic, timeout=timeout)
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        sys.exit(f"topic {topic} not found")
    partitions = sorted(metadata.topics[topic].partitions)
    # Where to stop: each partition's end now. A tenant lives on one
    # partition (murmur2 of its id), but reading them all needs no
    # partitioner and the key filter below keeps only the tenant's records.
    ends = {}
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout
        )
        if high > low:
            ends[partition] = high
    consumer.assign(
        [TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in ends]
    )
    key = tenant.encode()
    seen = set()
    events = []
    undecodable = 0
    while ends:
        message = consumer.poll(timeout)
        if message is None:
            sys.exit(f"no record within {timeout}s; still to read: {ends}")
        if message.error():
            raise KafkaException(message.error())
        partition, offset = message.partition(), message.offset()
        if partition in ends and offset + 1 >= ends[partition]:
            del ends[partition]
        if message.key() != key:
            continue
        try:
            event = decode(message.value())
        except Exception:  # a value that is not an Event: skip it, as chatstream does
            undecodable += 1
            continue
        # At least once: a redelivered output repeats its id.
        if (event.tenant_id, event.id) in seen:
            continue
        seen.add((event.tenant_id, event.id))
        events.append(event)
    return events, undecodable


def tokens_per_model(events):
    """`{model: {"tokens_in": n, "tokens_out": n}}` as the analytics
    processor counts them: every `model.usage_recorded` (one per turn step,
    all attempts included); an answer whose step has no usage event (the
    built-in mock of `chatstream dev` records none) counts its own usage.
    A step's usage event and its answer share their `causation_id`."""
    steps_with_usage = {
        event.causation_id
        for event in events
        if event.WhichOneof("payload") == "model_usage_recorded"
    }
    totals = {}

    def add(model, usage):
        figures = totals.setdefault(model, {"tokens_in": 0, "tokens_out": 0})
        figures["tokens_in"] += usage.prompt_tokens
        figures["tokens_out"] += usage.completion_tokens

    for event in events:
        kind = event.WhichOneof("payload")
        if kind == "model_usage_recorded":
            recorded = event.model_usage_recorded
            add(recorded.model, recorded.usage)
        elif kind == "assistant_message" and event.causation_id not in steps_with_usage:
            answer = event.assistant_message
            if answer.HasField("usage"):
                add(answer.model, answer.usage)
    return dict(sorted(totals.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenant", required=True, help="the tenant id (the records' key)")
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092",
    )
    parser.add_argument(
        "--topic",
        default=os.environ.get("CHATSTREAM_KAFKA_TOPIC", "chatstream.events"),
        help="default: $CHATSTREAM_KAFKA_TOPIC or chatstream.events",
    )
    parser.add_argument(
        "--proto-dir",
        default=str(DEFAULT_PROTO_DIR),
        help="where chatstream/events/v1/events.proto is (default: the repo's proto/)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the broker"
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra librdkafka setting (security.protocol, sasl.*, ...); repeatable",
    )
    args = parser.parse_args()

    Event = load_event_class(args.proto_dir)
    config = {
        "bootstrap.servers": args.bootstrap_servers,
        # Only read by assignment: this group never commits.
        "group.id": "chatstream-example-tokens-per-model",
        "enable.auto.commit": False,
        # Skip what aborted transactions wrote (docs/topics.md).
        "isolation.level": "read_committed",
        # Short fetch waits: some brokers (tansu) answer a fetch only then.
        "fetch.wait.max.ms": 50,
    }
    for setting in args.config:
        name, _, value = setting.partition("=")
        config[name] = value
    consumer = Consumer(config)
    try:
        events, undecodable = read_tenant_events(
            consumer, args.topic, args.tenant, Event.FromString, args.timeout
        )
    except KafkaException as error:
        sys.exit(f"reading {args.topic} from {args.bootstrap_servers}: {error}")
    finally:
        consumer.close()

    totals = tokens_per_model(events)
    if undecodable:
        print(f"skipped {undecodable} records that are not events", file=sys.stderr)
    if args.json:
        print(json.dumps({"tenant_id": args.tenant, "models": totals}))
        return
    if not totals:
        print(f"{args.tenant}: no tokens recorded ({len(events)} events read)")
    for model, figures in totals.items():
        print(
            f"{args.tenant}: {model}: {figures['tokens_in']} tokens in, "
            f"{figures['tokens_out']} tokens out"
        )


if __name__ == "__main__":
    main()
