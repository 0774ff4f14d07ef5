//! The `sandbox` command: the gateway beside the simulated partner systems of the
//! `partner-sim` crate (an EHR, an LMS, IdPs, a webhook receiver) and a sample app, all on
//! this machine (`run.rs`, its pages in `pages.rs`). Built with the default `sandbox`
//! feature; the gateway itself never depends on the simulators.
pub mod pages;
pub mod run;
