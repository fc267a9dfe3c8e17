//! Integration tests: the real service on a free port, against the real Redis and PostgreSQL.
//! Every test has its own database, Redis key prefix and journal directory.

mod abuse;
#[cfg(feature = "failpoints")]
mod components;
mod compression;
mod context;
mod context_model;
mod deployment;
mod durability;
mod edge;
mod evaluate;
mod event_time;
mod faults;
mod helpers;
mod ingest;
mod jetstream;
mod keys;
mod nodes;
mod operations;
mod partitions;
mod process;
mod rerank;
mod segment;
mod validation;
mod verify;
mod visitors;
