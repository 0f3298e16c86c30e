//! The analytics processor: turns the log into usage and latency figures
//! per tenant and per UTC minute, hour and day (see `docs/analytics.md`).
//! `figures.rs` names what is projected, `observe.rs` says what each event
//! adds (pure, no I/O), and `processor.rs` feeds it to the analytics store,
//! once per event id.
pub mod figures;
pub mod observe;
mod processor;

pub use processor::AnalyticsProjector;
