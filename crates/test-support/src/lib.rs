//! Test support for chatstream's crates and end-to-end tests, used only as a
//! dev-dependency: the conformance suites every backend of a seam must pass.

pub mod conformance;
