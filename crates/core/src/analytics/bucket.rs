//! What one time bucket holds: counters and latency histograms, each under
//! a series (a metric name and its labels, e.g. `tokens_in` for provider
//! `openai` and model `gpt-4o-mini`). Adding observations and merging
//! buckets are commutative, so the same events give the same bucket in any
//! order, and the encoding is canonical (sorted series, HdrHistogram V2
//! bytes), so the same bucket always encodes to the same bytes.
use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// Highest latency a histogram tracks exactly: a day. Longer ones are
/// recorded as a day.
pub const MAX_LATENCY_MS: u64 = 86_400_000;
/// Significant decimal digits of every latency histogram: percentiles are
/// exact to 0.1%.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Version of the encoding written by `BucketState::encode`.
const ENCODING_VERSION: u32 = 1;

/// A metric and its labels (`provider`, `model`, `server`, `tool`, `code`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Series {
    pub metric: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Series {
    pub fn new<'a>(metric: &str, labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            metric: metric.to_owned(),
            labels: labels
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        }
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// One event's contribution, at the moment it happened: counts to add and
/// latencies to record. Empty for events analytics does not count.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    /// When the event happened (Unix milliseconds, UTC): picks its buckets.
    pub at_ms: i64,
    pub counts: Vec<(Series, u64)>,
    pub latencies_ms: Vec<(Series, u64)>,
}

impl Observation {
    pub fn at(at_ms: i64) -> Self {
        Self {
            at_ms,
            ..Self::default()
        }
    }

    pub fn count(&mut self, series: Series, value: u64) {
        self.counts.push((series, value));
    }

    pub fn latency(&mut self, series: Series, millis: u64) {
        self.latencies_ms.push((series, millis));
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.latencies_ms.is_empty()
    }
}

/// An empty latency histogram with the bounds every bucket uses (merging
/// needs them equal).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MS, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// The counters and latency histograms of one bucket (or of several merged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BucketState {
    counters: BTreeMap<Series, u64>,
    latencies: BTreeMap<Series, Histogram<u64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("analytics bucket is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("analytics bucket has encoding version {0}, this build reads {ENCODING_VERSION}")]
    Version(u32),
    #[error("analytics histogram of {metric} is not valid: {reason}")]
    Histogram { metric: String, reason: String },
}

/// The stored form: sorted series, histograms as hex of their V2 bytes.
#[derive(Serialize, Deserialize)]
struct Encoded {
    version: u32,
    counters: Vec<EncodedCounter>,
    latencies: Vec<EncodedLatency>,
}

#[derive(Serialize, Deserialize)]
struct EncodedCounter {
    #[serde(flatten)]
    series: Series,
    value: u64,
}

#[derive(Serialize, Deserialize)]
struct EncodedLatency {
    #[serde(flatten)]
    series: Series,
    hdr_v2: String,
}

impl BucketState {
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.latencies.is_empty()
    }

    pub fn counters(&self) -> &BTreeMap<Series, u64> {
        &self.counters
    }

    pub fn latencies(&self) -> &BTreeMap<Series, Histogram<u64>> {
        &self.latencies
    }

    /// Adds an event's counts and records its latencies.
    pub fn observe(&mut self, observation: &Observation) {
        for (series, value) in &observation.counts {
            self.add_count(series, *value);
        }
        for (series, millis) in &observation.latencies_ms {
            self.latencies
                .entry(series.clone())
                .or_insert_with(latency_histogram)
                .saturating_record(*millis);
        }
    }

    fn add_count(&mut self, series: &Series, value: u64) {
        let counter = self.counters.entry(series.clone()).or_default();
        *counter = counter.saturating_add(value);
    }

    /// Adds another bucket's counters and histograms to this one.
    pub fn merge(&mut self, other: &BucketState) {
        for (series, value) in &other.counters {
            self.add_count(series, *value);
        }
        for (series, histogram) in &other.latencies {
            let mine = self
                .latencies
                .entry(series.clone())
                .or_insert_with(latency_histogram);
            // Equal bounds (both from `latency_histogram`, or decoded and
            // checked): adding cannot fail.
            mine.add(histogram)
                .expect("latency histograms share their bounds");
        }
    }

    /// The canonical bytes of this state: equal states give equal bytes.
    pub fn encode(&self) -> Vec<u8> {
        let latencies = self
            .latencies
            .iter()
            .map(|(series, histogram)| {
                let mut bytes = Vec::new();
                V2Serializer::new()
                    .serialize(histogram, &mut bytes)
                    .expect("serializing into a Vec cannot fail");
                EncodedLatency {
                    series: series.clone(),
                    hdr_v2: hex::encode(bytes),
                }
            })
            .collect();
        let encoded = Encoded {
            version: ENCODING_VERSION,
            counters: self
                .counters
                .iter()
                .map(|(series, value)| EncodedCounter {
                    series: series.clone(),
                    value: *value,
                })
                .collect(),
            latencies,
        };
        serde_json::to_vec(&encoded).expect("bucket state serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let encoded: Encoded = serde_json::from_slice(bytes)?;
        if encoded.version != ENCODING_VERSION {
            return Err(DecodeError::Version(encoded.version));
        }
        let counters = encoded
            .counters
            .into_iter()
            .map(|counter| (counter.series, counter.value))
            .collect();
        let mut latencies = BTreeMap::new();
        for latency in encoded.latencies {
            let invalid = |reason: String| DecodeError::Histogram {
                metric: latency.series.metric.clone(),
                reason,
            };
            let bytes = hex::decode(&latency.hdr_v2).map_err(|e| invalid(e.to_string()))?;
            let decoded: Histogram<u64> = Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .map_err(|e| invalid(format!("{e:?}")))?;
            // Recorded again into the standard bounds, so merging stays
            // infallible whatever the stored header said.
            let mut histogram = latency_histogram();
            histogram
                .add(&decoded)
                .map_err(|e| invalid(format!("{e:?}")))?;
            latencies.insert(latency.series, histogram);
        }
        Ok(Self {
            counters,
            latencies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(model: &str) -> Series {
        Series::new("tokens_in", [("provider", "openai"), ("model", model)])
    }

    fn observation(at_ms: i64, model: &str, tokens_in: u64, latency_ms: u64) -> Observation {
        let mut observation = Observation::at(at_ms);
        observation.count(tokens(model), tokens_in);
        observation.latency(
            Series::new("answer_duration_ms", [("model", model)]),
            latency_ms,
        );
        observation
    }

    #[test]
    fn observations_in_any_order_encode_to_the_same_bytes() {
        let observations = [
            observation(1, "a", 10, 120),
            observation(2, "b", 7, 3_000),
            observation(3, "a", 5, 95),
            observation(4, "a", 1, 120_000_000),
        ];
        let mut forward = BucketState::default();
        observations.iter().for_each(|o| forward.observe(o));
        let mut backward = BucketState::default();
        observations.iter().rev().for_each(|o| backward.observe(o));
        assert_eq!(forward.encode(), backward.encode());
        assert_eq!(forward.counters()[&tokens("a")], 16);
        assert_eq!(forward.counters()[&tokens("b")], 7);
    }

    #[test]
    fn decoding_and_merging_gives_the_bytes_of_observing_everything_at_once() {
        let (first, second) = (observation(1, "a", 10, 120), observation(2, "a", 3, 480));
        let mut whole = BucketState::default();
        whole.observe(&first);
        whole.observe(&second);

        let mut stored = BucketState::default();
        stored.observe(&first);
        let mut reloaded = BucketState::decode(&stored.encode()).expect("decode");
        assert_eq!(reloaded, stored, "a round trip keeps everything");
        reloaded.observe(&second);
        assert_eq!(reloaded.encode(), whole.encode());

        let mut merged = BucketState::default();
        let mut only_second = BucketState::default();
        only_second.observe(&second);
        merged.merge(&stored);
        merged.merge(&only_second);
        assert_eq!(merged.encode(), whole.encode());
    }

    #[test]
    fn latencies_above_a_day_are_recorded_as_a_day() {
        let mut state = BucketState::default();
        state.observe(&observation(1, "a", 1, u64::MAX));
        let histogram = state.latencies().values().next().expect("one histogram");
        assert_eq!(histogram.len(), 1);
        assert!(
            histogram.max() >= MAX_LATENCY_MS
                && histogram.max() < MAX_LATENCY_MS + MAX_LATENCY_MS / 100
        );
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        assert!(matches!(
            BucketState::decode(b"{"),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            BucketState::decode(br#"{"version":9,"counters":[],"latencies":[]}"#),
            Err(DecodeError::Version(9))
        ));
        let bad_histogram =
            br#"{"version":1,"counters":[],"latencies":[{"metric":"m","hdr_v2":"00ff"}]}"#;
        assert!(matches!(
            BucketState::decode(bad_histogram),
            Err(DecodeError::Histogram { .. })
        ));
    }
}
