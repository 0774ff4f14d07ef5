//! What the benches share (each bench says `mod support;`): the command line, the stores
//! (a SQLite file, a fresh PostgreSQL database or schema, dropped at the end), the gateway
//! on loopback, CPU accounting, timing summaries and the facts a report starts with. Each
//! bench keeps what it measures and what it prints.

// Each bench uses a part of this; the rest is dead code in that bench's crate.
#![allow(dead_code)]

pub mod args;
pub mod cpu;
pub mod db;
pub mod facts;
pub mod http;
pub mod server;
pub mod stats;
pub mod workers;
pub mod wrk;
